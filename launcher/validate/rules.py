"""Every check that can fail before anything is queued.

Each rule reads the composed config (a plain dict) and the facts the backend could gather
(`Facts`: GPUs on this machine, partitions from sinfo, ...), and returns Problems that name the
key(s) to change and the numbers involved. Rules do no I/O of their own except reading a local
model's config.json and checking that local paths exist.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

from launcher.walltime import parse_walltime

EXIT_INVALID_CONFIG = 2  # documented in the README: invalid configuration, nothing submitted

# GRPOConfig fields the launcher sets itself: a user value would silently break the wiring.
LAUNCHER_OWNED_GRPO = {
    "use_vllm": "trainer.use_vllm",
    "vllm_mode": "mode",
    "vllm_server_base_url": "server.host / server.port",
    "vllm_server_host": "server.host",
    "vllm_server_port": "server.port",
    "vllm_group_port": "trainer.group_port",
    "reward_weights": "reward.weights",
}
# sbatch flags the launcher renders from the topology; set them through the named keys instead.
LAUNCHER_OWNED_SBATCH = {
    "nodes": "server.nodes / trainer.nodes",
    "N": "server.nodes / trainer.nodes",
    "gpus-per-node": "server.gpus_per_node / trainer.gpus_per_node",
    "gpus": "server.gpus_per_node / trainer.gpus_per_node",
    "gres": "server.gpus_per_node / trainer.gpus_per_node",
    "ntasks-per-node": "(fixed: one task per node)",
    "ntasks": "(fixed: one task per node)",
    "output": "(the job folder holds the logs)",
    "error": "(the job folder holds the logs)",
    "signal": "cluster.signal_before_end_s",
    "requeue": "cluster.max_requeues",
    "no-requeue": "cluster.max_requeues",
    "job-name": "name",
    "J": "name",
    "time": "cluster.time",
    "t": "cluster.time",
    "partition": "cluster.partition",
    "p": "cluster.partition",
    "account": "cluster.account",
    "A": "cluster.account",
    "qos": "cluster.qos",
    "constraint": "cluster.constraint",
    "C": "cluster.constraint",
    "export": "(the launcher passes the environment; see cluster.env / cluster.secret_env)",
}
# sbatch 22.05's long options (`sbatch --help` and sbatch(1)); a key outside this set would make sbatch
# exit with "unrecognized option" after the job folder was made
SBATCH_OPTIONS = frozenset("""
account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment constraint container
contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot dependency
distribution error exclude exclusive export export-file extra-node-info get-user-env gid gpu-bind gpu-freq gpus
gpus-per-node gpus-per-socket gpus-per-task gres gres-flags help hint hold ignore-pbs input job-name
kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus network
nice no-kill no-requeue nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu ntasks-per-node
ntasks-per-socket open-mode output overcommit oversubscribe parsable partition power prefer priority profile
propagate qos quiet reboot requeue reservation signal sockets-per-node spread-job switches test-only
thread-spec threads-per-core time time-min tmp uid usage use-min-nodes verbose version wait wait-all-nodes
wckey wrap""".split())
SBATCH_SHORT = {"A": "account", "C": "constraint", "D": "chdir", "F": "nodefile", "G": "gpus", "H": "hold",
                "J": "job-name", "L": "licenses", "M": "clusters", "N": "nodes", "O": "overcommit", "Q": "quiet",
                "S": "core-spec", "V": "version", "W": "wait", "a": "array", "b": "begin", "c": "cpus-per-task",
                "d": "dependency", "e": "error", "h": "help", "i": "input", "k": "no-kill", "m": "distribution",
                "n": "ntasks", "o": "output", "p": "partition", "q": "qos", "s": "oversubscribe", "t": "time",
                "v": "verbose", "w": "nodelist", "x": "exclude"}
# options that make no sense in a launcher's #SBATCH block, and why
SBATCH_REFUSED = {
    "array": "a heterogeneous job cannot be a job array; use a sweep (python -m launcher -m ...)",
    "wrap": "the launcher writes the batch script itself",
    "wait": "sbatch would block until the job ends; use cluster.wait=true",
    "test-only": "nothing would be submitted; use dry_run=true",
    "parsable": "the launcher reads sbatch's output itself",
    "help": "not a job option", "usage": "not a job option", "version": "not a job option",
    "chdir": "the job runs from the launch directory; set paths in the config instead",
    "input": "the components read nothing from stdin",
}
# options that take no value (true/false), and those whose value is optional
SBATCH_FLAGS = frozenset("contiguous hold ignore-pbs overcommit oversubscribe reboot requeue no-requeue "
                         "spread-job test-only use-min-nodes parsable quiet verbose".split())
SBATCH_OPTIONAL_VALUE = frozenset("exclusive no-kill get-user-env propagate kill-on-invalid-dep wait-all-nodes".split())
MEMORY = re.compile(r"^\d+([KMGT]B?)?$", re.I)
SLURM_NAME = re.compile(r"^[A-Za-z0-9_.,+-]+$")  # partition / account / qos (a comma list of partitions is fine)
# the name is a folder under cluster.job_root: no path separators, no "." / "..", no control characters
# and no "|": sacct's parsable output (the jobs CLI, job states) cannot delimit a job name holding it
JOB_NAME = re.compile(r"^(?!\.\.?$)[^/|\x00-\x1f\x7f]{1,100}$")
# `trl vllm-serve` flags the launcher sets from the config (key to set instead)
SERVER_OWNED_FLAGS = {
    "model": "model.name_or_path", "revision": "model.revision", "host": "server.host", "port": "server.port",
    "tensor-parallel-size": "server.tensor_parallel_size", "data-parallel-size": "server.data_parallel_size",
    "gpu-memory-utilization": "server.gpu_memory_utilization", "max-model-len": "server.max_model_len",
    "enforce-eager": "server.enforce_eager", "trust-remote-code": "model.trust_remote_code",
    "distributed-executor-backend": "server.distributed_executor_backend",
}
# `accelerate launch` flags the launcher sets from the topology
TRAINER_OWNED_FLAGS = {
    "config-file": "trainer.strategy", "num-machines": "trainer.nodes",
    "num-processes": "trainer.nodes x trainer.gpus_per_node", "machine-rank": "(set per node in the job)",
    "main-process-ip": "(trainer node 0, found in the job)", "main-process-port": "trainer.main_process_port",
}
# environment variables the launcher or Slurm sets in the components; a value in cluster/server/trainer.env breaks that wiring
RESERVED_ENV = re.compile(r"^(LAUNCHER_.*|SLURM_.*|SUBMITIT_.*|CUDA_VISIBLE_DEVICES|VLLM_HOST_IP|MASTER_ADDR|"
                          r"MASTER_PORT|RANK|LOCAL_RANK|WORLD_SIZE)$")
EXECUTOR_BACKENDS = ("mp", "ray", "uni", "external_launcher")
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY)", re.I)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
SBATCH_FLAG = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow")


@dataclass(frozen=True)
class Problem:
    keys: tuple[str, ...]
    message: str
    severity: str = "error"  # "error" stops the launch; "warning" is printed

    def __str__(self) -> str:
        return f"{', '.join(self.keys)}: {self.message}"


@dataclass(frozen=True)
class Facts:
    """What the backend could learn about where the job will run (None = unknown)."""

    local_gpus: Optional[int] = None  # GPUs on this machine (local backend)
    partitions: Optional[dict[str, dict[str, Any]]] = None  # sinfo: name -> {"gpus_per_node": int, "nodes": int}
    default_partition: Optional[str] = None


class InvalidConfig(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@lru_cache(maxsize=1)
def grpo_fields() -> dict[str, Any]:
    """GRPOConfig's fields (name -> {"type", "default"}), dumped from TRL by scripts/gen_grpo_fields.py."""
    text = resources.files("launcher").joinpath("grpo_fields.json").read_text()
    return json.loads(text)


def _positive_int(cfg: dict, section: str, key: str) -> list[Problem]:
    value = cfg[section][key]
    if not isinstance(value, int) or value < 1:
        return [Problem((f"{section}.{key}",), f"must be a positive integer, got {value!r}")]
    return []


def check_counts(cfg: dict, facts: Facts) -> list[Problem]:
    problems = []
    keys = [("trainer", "nodes"), ("trainer", "gpus_per_node")]
    if cfg["mode"] == "server":
        keys += [("server", "nodes"), ("server", "gpus_per_node"),
                 ("server", "tensor_parallel_size"), ("server", "data_parallel_size")]
    for section, key in keys:
        problems += _positive_int(cfg, section, key)
    return problems


def check_server_topology(cfg: dict, facts: Facts) -> list[Problem]:
    if cfg["mode"] != "server":
        return []
    s = cfg["server"]
    tp, dp, nodes, gpn = s["tensor_parallel_size"], s["data_parallel_size"], s["nodes"], s["gpus_per_node"]
    if min(tp, dp, nodes, gpn) < 1:
        return []  # reported by check_counts
    problems = []
    if tp * dp != nodes * gpn:
        problems.append(Problem(
            ("server.tensor_parallel_size", "server.data_parallel_size", "server.nodes", "server.gpus_per_node"),
            f"TP x DP = {tp} x {dp} = {tp * dp} must equal the server's GPUs, "
            f"nodes x gpus_per_node = {nodes} x {gpn} = {nodes * gpn}"))
    elif nodes > 1 and s.get("distributed_executor_backend") != "ray":
        problems.append(Problem(
            ("server.nodes", "server.distributed_executor_backend"),
            f"TP x DP = {tp * dp} spans {nodes} nodes; vLLM's default executor is single-node: "
            f"use server.nodes=1 with gpus_per_node={tp * dp}, or set server.distributed_executor_backend=ray"))
    return problems


def read_model_config(name_or_path: str) -> Optional[dict]:
    """config.json of a local model folder, or None when it is not a readable local folder."""
    path = Path(os.path.expanduser(name_or_path)) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _text_config(model_cfg: dict) -> dict:
    # multimodal configs nest the language model's numbers
    return model_cfg.get("text_config") or model_cfg


def check_tensor_parallel_heads(cfg: dict, facts: Facts) -> list[Problem]:
    if cfg["mode"] != "server":
        return []
    model_cfg = read_model_config(cfg["model"]["name_or_path"])
    tp = cfg["server"]["tensor_parallel_size"]
    if model_cfg is None or not isinstance(tp, int) or tp < 1:
        return []
    text = _text_config(model_cfg)
    heads = text.get("num_attention_heads")
    kv_heads = text.get("num_key_value_heads", heads)
    problems = []
    if isinstance(heads, int) and heads % tp:
        problems.append(Problem(
            ("server.tensor_parallel_size",),
            f"TP = {tp} must divide the model's attention heads ({heads}, from "
            f"{cfg['model']['name_or_path']}/config.json)"))
    elif isinstance(kv_heads, int) and kv_heads % tp and tp % kv_heads:
        problems.append(Problem(
            ("server.tensor_parallel_size",),
            f"TP = {tp} and the model's {kv_heads} key/value heads must divide one another"))
    return problems


def check_data_parallel_dense(cfg: dict, facts: Facts) -> list[Problem]:
    if cfg["mode"] != "server" or cfg["server"]["data_parallel_size"] in (None, 1):
        return []
    if not isinstance(cfg["server"]["data_parallel_size"], int) or cfg["server"]["data_parallel_size"] < 1:
        return []
    model_cfg = read_model_config(cfg["model"]["name_or_path"])
    moe_keys = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
    if model_cfg is not None and any(_text_config(model_cfg).get(k) for k in moe_keys):
        return []
    which = "a dense model" if model_cfg is not None else "a model whose config.json is not readable here"
    return [Problem(
        ("server.data_parallel_size",),
        f"DP = {cfg['server']['data_parallel_size']} on {which}: TRL documents data parallelism > 1 as "
        "unsupported for dense models; prefer tensor_parallel_size, or check that vLLM accepts it",
        severity="warning")]


def trainer_processes(cfg: dict) -> int:
    t = cfg["trainer"]
    return t["nodes"] * t["gpus_per_node"]


def check_grpo_batch(cfg: dict, facts: Facts) -> list[Problem]:
    g = cfg["grpo"]
    problems = []
    num_generations = g.get("num_generations", grpo_fields()["fields"]["num_generations"]["default"])
    per_device = g.get("per_device_train_batch_size",
                       grpo_fields()["fields"]["per_device_train_batch_size"]["default"])
    accum = g.get("gradient_accumulation_steps", 1)
    gen_batch = g.get("generation_batch_size")
    steps_per_gen = g.get("steps_per_generation")
    if not all(isinstance(v, int) for v in (num_generations, per_device, accum)):
        return []  # type problems are reported by check_grpo_fields
    if num_generations < 2:
        problems.append(Problem(("grpo.num_generations",),
                                f"GRPO needs at least 2 generations per prompt to compute advantages, got {num_generations}"))
        return problems
    if min(per_device, accum) < 1 or trainer_processes(cfg) < 1:
        return problems  # reported by check_grpo_counts / check_counts
    processes = trainer_processes(cfg)
    global_batch = per_device * processes
    if gen_batch is not None and steps_per_gen is not None:
        problems.append(Problem(("grpo.generation_batch_size", "grpo.steps_per_generation"),
                                "set one of them, not both (TRL refuses both)"))
        return problems
    if gen_batch is not None:
        if not isinstance(gen_batch, int) or gen_batch < 1:
            return problems  # reported by check_grpo_counts
        if gen_batch % global_batch:
            problems.append(Problem(
                ("grpo.generation_batch_size", "grpo.per_device_train_batch_size", "trainer.gpus_per_node", "trainer.nodes"),
                f"generation_batch_size ({gen_batch}) must be divisible by the global batch "
                f"per_device_train_batch_size x processes = {per_device} x {processes} = {global_batch}"))
            return problems
    else:
        if steps_per_gen is not None and (not isinstance(steps_per_gen, int) or steps_per_gen < 1):
            return problems  # reported by check_grpo_counts
        gen_batch = global_batch * (steps_per_gen or accum)
    if isinstance(gen_batch, int) and 0 < gen_batch < num_generations:
        problems.append(Problem(
            ("grpo.num_generations", "grpo.per_device_train_batch_size", "grpo.generation_batch_size"),
            f"num_generations ({num_generations}) is larger than the generation batch ({gen_batch}): all "
            f"generations of a prompt must fit in one batch"))
        return problems
    if not isinstance(gen_batch, int) or gen_batch < 1:
        return problems
    if gen_batch % num_generations:
        how = ("generation_batch_size" if g.get("generation_batch_size") is not None else
               f"per_device_train_batch_size x processes x steps_per_generation = "
               f"{per_device} x {processes} x {steps_per_gen or accum}")
        problems.append(Problem(
            ("grpo.num_generations", "grpo.per_device_train_batch_size", "grpo.gradient_accumulation_steps",
             "trainer.gpus_per_node"),
            f"the generation batch ({how} = {gen_batch}) must be divisible by num_generations ({num_generations})"))
    return problems


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, (list, tuple)),
    "dict": lambda v: isinstance(v, dict) or isinstance(v, str),  # TrainingArguments accept JSON strings
}


def _accepts(type_name: str, value: Any) -> bool:
    """Whether a value fits a type string from grpo_fields.json ('int', 'optional[float]', 'int|str', ...)."""
    name = type_name.strip().lower()
    if name.startswith("optional[") and name.endswith("]"):
        return value is None or _accepts(name[len("optional["):-1], value)
    if "|" in name:
        return any(_accepts(part, value) for part in name.split("|"))
    check = _TYPE_CHECKS.get(name)
    return True if check is None else check(value)  # unknown types: TRL decides in the job


def check_grpo_fields(cfg: dict, facts: Facts) -> list[Problem]:
    fields = grpo_fields()["fields"]
    problems = []
    for key, value in cfg["grpo"].items():
        if key in LAUNCHER_OWNED_GRPO:
            problems.append(Problem((f"grpo.{key}",),
                                    f"is set by the launcher; use {LAUNCHER_OWNED_GRPO[key]} instead"))
        elif key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean grpo.{close[0]}?" if close else ""
            problems.append(Problem((f"grpo.{key}",),
                                    f"is not a field of trl.GRPOConfig (TRL {grpo_fields()['trl_version']}){hint}"))
        elif value is not None and not _accepts(fields[key]["type"], value):
            problems.append(Problem((f"grpo.{key}",),
                                    f"must be {fields[key]['type']}, got {type(value).__name__} {value!r}"))
        elif "choices" in fields[key] and value not in fields[key]["choices"]:
            close = difflib.get_close_matches(str(value), fields[key]["choices"], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(Problem((f"grpo.{key}",),
                                    f"{value!r} is not one of {', '.join(fields[key]['choices'])}{hint}"))
    return problems


GRPO_POSITIVE = ("per_device_train_batch_size", "gradient_accumulation_steps", "generation_batch_size",
                 "steps_per_generation", "max_completion_length", "num_iterations")


def check_grpo_counts(cfg: dict, facts: Facts) -> list[Problem]:
    """Counts TRL divides by or loops over: 0 or less fails in GRPOConfig, after the job has queued."""
    problems = []
    for key in GRPO_POSITIVE:
        value = cfg["grpo"].get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            problems.append(Problem((f"grpo.{key}",), f"must be at least 1, got {value}"))
    samples = cfg["data"].get("max_samples")
    if samples is not None and samples < 1:
        problems.append(Problem(("data.max_samples",), f"must be at least 1 or null (all rows), got {samples}"))
    return problems


def check_lengths(cfg: dict, facts: Facts) -> list[Problem]:
    """A completion as long as the server's whole context leaves no room for the prompt: vLLM rejects
    every request ("maximum context length") once training starts."""
    if cfg["mode"] != "server" or not cfg["trainer"]["use_vllm"]:
        return []
    max_len = cfg["server"]["max_model_len"]
    completion = cfg["grpo"].get("max_completion_length", grpo_fields()["fields"]["max_completion_length"]["default"])
    if isinstance(max_len, int) and max_len < 1:
        return [Problem(("server.max_model_len",), f"must be at least 1 or null (the model's), got {max_len}")]
    if isinstance(max_len, int) and isinstance(completion, int) and completion >= max_len:
        return [Problem(("grpo.max_completion_length", "server.max_model_len"),
                        f"completions of up to {completion} tokens leave no room for the prompt in the server's "
                        f"context of {max_len} tokens: raise server.max_model_len or lower max_completion_length")]
    return []


def _flag(arg: Any) -> Optional[str]:
    """`--tensor_parallel_size=2` -> "tensor-parallel-size"; None for values and short options."""
    if not isinstance(arg, str) or not arg.startswith("--"):
        return {"-tp": "tensor-parallel-size", "-dp": "data-parallel-size"}.get(arg) if isinstance(arg, str) else None
    return arg[2:].split("=", 1)[0].replace("_", "-").lower()


def check_extra_args(cfg: dict, facts: Facts) -> list[Problem]:
    """Pass-through flags must not fight the ones the launcher sets (the last one wins, silently)."""
    problems = []
    if cfg["mode"] == "server":
        for arg in cfg["server"]["extra_args"]:
            flag = _flag(arg)
            if flag in SERVER_OWNED_FLAGS:
                problems.append(Problem(("server.extra_args",),
                                        f"{arg} is set by the launcher; use {SERVER_OWNED_FLAGS[flag]} instead"))
            elif flag == "api-key":
                problems.append(Problem(("server.extra_args",),
                                        "--api-key breaks training: TRL's client sends no key, so /v1/* answers 401 "
                                        "(and vLLM's development endpoints stay unauthenticated; docs/security.md)"))
    for arg in cfg["trainer"]["extra_args"]:
        flag = _flag(arg)
        if flag in TRAINER_OWNED_FLAGS:
            problems.append(Problem(("trainer.extra_args",),
                                    f"{arg} is set by the launcher; use {TRAINER_OWNED_FLAGS[flag]} instead"))
    return problems


def check_name(cfg: dict, facts: Facts) -> list[Problem]:
    name = cfg["name"]
    if not isinstance(name, str) or not JOB_NAME.match(name):
        return [Problem(("name",), f"{name!r} names the job folder under cluster.job_root: 1-100 characters, "
                                   "no '/', no '|' (sacct's delimiter), no control characters (newlines, "
                                   "tabs), not '.' or '..'")]
    return []


def check_walltime(cfg: dict, facts: Facts) -> list[Problem]:
    try:
        seconds = parse_walltime(cfg["cluster"]["time"])
    except ValueError as e:
        return [Problem(("cluster.time",), str(e))]
    problems = []
    if seconds <= 0:
        problems.append(Problem(("cluster.time",), "must be longer than 0"))
    elif cfg["cluster"]["backend"] == "slurm" and cfg["cluster"]["signal_before_end_s"] >= seconds:
        problems.append(Problem(
            ("cluster.time", "cluster.signal_before_end_s"),
            f"the pre-walltime signal ({cfg['cluster']['signal_before_end_s']} s before the end) would come "
            f"before the job starts: walltime is only {seconds} s"))
    return problems


def check_timeouts(cfg: dict, facts: Facts) -> list[Problem]:
    problems = []
    for key in ("server.startup_timeout_s", "server.health_grace_s", "trainer.watchdog_timeout_s",
                "cluster.checkpoint_timeout_s", "cluster.stop_grace_s", "cluster.submit_rate_per_s"):
        section, name = key.split(".")
        if cfg[section][name] <= 0:
            problems.append(Problem((key,), f"must be > 0, got {cfg[section][name]}"))
    for key in ("cluster.signal_before_end_s", "cluster.max_requeues", "cluster.submit_retries"):
        section, name = key.split(".")
        if cfg[section][name] < 0:
            problems.append(Problem((key,), f"must be >= 0, got {cfg[section][name]}"))
    c = cfg["cluster"]
    if (c["backend"] == "slurm" and c["checkpoint_timeout_s"] > 0
            and 0 <= c["signal_before_end_s"] < c["checkpoint_timeout_s"] + c["stop_grace_s"]):
        problems.append(Problem(
            ("cluster.signal_before_end_s", "cluster.checkpoint_timeout_s", "cluster.stop_grace_s"),
            f"USR2 comes {c['signal_before_end_s']} s before the walltime, but the checkpoint may take "
            f"{c['checkpoint_timeout_s']:g} s and stopping {c['stop_grace_s']:g} s more: the walltime would cut "
            "the checkpoint short"))
    if 0 < cfg["trainer"]["watchdog_timeout_s"] < 120:
        problems.append(Problem(("trainer.watchdog_timeout_s",),
                                f"{cfg['trainer']['watchdog_timeout_s']:g} s may end a healthy job: there is no "
                                "heartbeat while a model loads or weights sync", severity="warning"))
    backend = cfg["server"]["distributed_executor_backend"]
    if cfg["mode"] == "server" and backend is not None and backend not in EXECUTOR_BACKENDS:
        problems.append(Problem(("server.distributed_executor_backend",),
                                f"{backend!r} is not one of vLLM's executors ({', '.join(EXECUTOR_BACKENDS)}) or null"))
    util = cfg["server"]["gpu_memory_utilization"]
    if cfg["mode"] == "server" and not 0 < util <= 1:
        problems.append(Problem(("server.gpu_memory_utilization",), f"must be in (0, 1], got {util}"))
    return problems


def check_ports(cfg: dict, facts: Facts) -> list[Problem]:
    problems = []
    for key in ("server.port", "trainer.main_process_port", "trainer.group_port"):
        section, name = key.split(".")
        port = cfg[section][name]
        if port is not None and not 1024 <= port <= 65535:
            problems.append(Problem((key,), f"must be a port in 1024..65535 or null (pick one per job), got {port}"))
    t = cfg["trainer"]
    if t["group_port"] is not None and t["group_port"] == t["main_process_port"]:
        problems.append(Problem(("trainer.group_port", "trainer.main_process_port"),
                                f"both are {t['group_port']}: the weight-sync store and accelerate's rendezvous both "
                                "listen on trainer node 0"))
    port = cfg["server"]["port"]
    if (cfg["cluster"]["backend"] == "local" and cfg["mode"] == "server" and port is not None
            and port in (t["group_port"], t["main_process_port"])):
        problems.append(Problem(("server.port", "trainer.group_port", "trainer.main_process_port"),
                                f"port {port} is used twice on this machine"))
    if cfg["server"]["host"] == "0.0.0.0":
        problems.append(Problem(("server.host",),
                                "0.0.0.0 exposes the unauthenticated vLLM development endpoints on every "
                                "interface of the node", severity="warning"))
    return problems


def _looks_local(path: str) -> bool:
    return (path.startswith(("/", ".", "~")) or path.endswith(DATA_FILE_SUFFIXES)
            or not HUB_ID.match(path))


def check_paths(cfg: dict, facts: Facts) -> list[Problem]:
    problems = []
    for key in ("model.name_or_path", "data.name_or_path"):
        section, name = key.split(".")
        value = cfg[section][name]
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem((key,), "must be a hub id (org/name) or a local path"))
        elif _looks_local(value) and not Path(os.path.expanduser(value)).exists():
            hint = " (build the smoke assets: python scripts/make_smoke_assets.py)" if "/smoke/" in value else ""
            problems.append(Problem((key,), f"local path {value} does not exist{hint}"))
    return problems


def check_local_files(cfg: dict, facts: Facts) -> list[Problem]:
    """The interpreter the nodes run and the folder job folders go to (a shared filesystem is assumed)."""
    problems = []
    python = cfg["cluster"]["python"]
    if python and os.path.isabs(os.path.expanduser(python)) and not os.access(os.path.expanduser(python), os.X_OK):
        problems.append(Problem(("cluster.python",), f"{python} is not an executable file here (fine only if the "
                                                     "nodes have it at that path)", severity="warning"))
    root = Path(os.path.expanduser(str(cfg["cluster"]["job_root"])))
    existing = next((p for p in [root, *root.absolute().parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        problems.append(Problem(("cluster.job_root",), f"{existing} is a file, not a folder"))
    elif existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        problems.append(Problem(("cluster.job_root",), f"{existing} is not writable: job folders cannot be made there"))
    return problems


def check_rewards(cfg: dict, facts: Facts) -> list[Problem]:
    funcs, weights = cfg["reward"]["funcs"], cfg["reward"]["weights"]
    problems = []
    if not funcs:
        problems.append(Problem(("reward.funcs",), "needs at least one reward function import path"))
    for f in funcs:
        if not IMPORT_PATH.match(str(f)):
            problems.append(Problem(("reward.funcs",), f"{f!r} is not an import path like trl.rewards.accuracy_reward"))
    if weights is not None and len(weights) != len(funcs):
        problems.append(Problem(("reward.weights", "reward.funcs"),
                                f"{len(weights)} weights for {len(funcs)} reward functions"))
    return problems


def check_env(cfg: dict, facts: Facts) -> list[Problem]:
    problems = []
    for section in ("cluster", "server", "trainer"):
        for name in cfg[section]["env"]:
            key = f"{section}.env.{name}"
            if not ENV_NAME.match(name):
                problems.append(Problem((key,), "is not a valid environment variable name"))
            elif SECRET_NAME.search(name):
                problems.append(Problem(
                    (key, "cluster.secret_env"),
                    f"looks like a secret: values in {section}.env are written into the job script; export "
                    f"{name} in your shell and list it in cluster.secret_env instead"))
    for section in ("cluster", "server", "trainer"):
        for name in cfg[section]["env"]:
            if ENV_NAME.match(name) and RESERVED_ENV.match(name):
                problems.append(Problem((f"{section}.env.{name}",),
                                        "is set by the launcher or Slurm in each component; setting it breaks "
                                        "the wiring (GPU binding, ranks, the job folder)"))
            elif name in cfg["cluster"]["secret_env"] and not SECRET_NAME.search(name):
                problems.append(Problem((f"{section}.env.{name}", "cluster.secret_env"),
                                        f"{name} is a secret (cluster.secret_env): its value comes from your "
                                        f"environment only; remove it from {section}.env, whose values are written "
                                        "into the job folder"))
    for name in cfg["cluster"]["secret_env"]:
        if not ENV_NAME.match(name):
            problems.append(Problem(("cluster.secret_env",), f"{name!r} is not a valid environment variable name"))
    return problems


def _sbatch_value_problem(option: str, value: Any) -> Optional[str]:
    if _multiline(value):
        return "an #SBATCH value cannot contain a newline"
    if option in SBATCH_FLAGS:
        return None if isinstance(value, bool) else f"--{option} takes no value: set it to true or false"
    if value is True and option not in SBATCH_OPTIONAL_VALUE:
        return f"--{option} needs a value"
    if option in ("mem", "mem-per-cpu", "mem-per-gpu") and not (value is None or MEMORY.match(str(value))):
        return f"{value!r} is not a memory size sbatch accepts (a number of MB, or with a unit: 64G, 500M)"
    if option in ("cpus-per-task", "mincpus", "ntasks-per-gpu", "cpus-per-gpu") and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return f"must be a positive integer, got {value!r}"
    return None


def check_sbatch(cfg: dict, facts: Facts) -> list[Problem]:
    problems = []
    for section in ("cluster", "server", "trainer"):
        for flag, value in cfg[section]["sbatch"].items():
            key = f"{section}.sbatch.{flag}"
            bare = str(flag).lstrip("-")
            option = SBATCH_SHORT.get(bare, bare)
            if not SBATCH_FLAG.match(bare):
                problems.append(Problem((key,), "is not an sbatch option name"))
            elif option in LAUNCHER_OWNED_SBATCH:
                problems.append(Problem((key,), f"is rendered by the launcher; set {LAUNCHER_OWNED_SBATCH[option]}"))
            elif option not in SBATCH_OPTIONS:
                close = difflib.get_close_matches(option, sorted(SBATCH_OPTIONS), n=1)
                hint = f"; did you mean {section}.sbatch.{close[0]}?" if close else ""
                problems.append(Problem((key,), f"--{option} is not an sbatch option (Slurm 22.05){hint}"))
            elif option in SBATCH_REFUSED:
                problems.append(Problem((key,), f"is not allowed: {SBATCH_REFUSED[option]}"))
            else:
                why = _sbatch_value_problem(option, value)
                if why:
                    problems.append(Problem((key,), why))
    values = {f"cluster.{k}": cfg["cluster"][k] for k in ("partition", "account", "qos", "constraint", "time")}
    for key, value in values.items():
        if _multiline(value):
            problems.append(Problem((key,), "an #SBATCH value cannot contain a newline"))
        elif key in ("cluster.partition", "cluster.account", "cluster.qos") and value is not None and \
                not SLURM_NAME.match(str(value)):
            problems.append(Problem((key,), f"{value!r} is not a Slurm {key.split('.')[1]} name "
                                            "(letters, digits, '.', '_', '-'; partitions may be a comma list)"))
    return problems


def _multiline(value: Any) -> bool:
    return isinstance(value, str) and ("\n" in value or "\r" in value or "\0" in value)


def _local_gpu_sets(cfg: dict) -> tuple[list[int], list[int]]:
    s, t = cfg["server"], cfg["trainer"]
    trainer_n = t["nodes"] * t["gpus_per_node"]
    server_n = s["nodes"] * s["gpus_per_node"] if cfg["mode"] == "server" else 0
    trainer = list(t["gpus"]) if t["gpus"] is not None else list(range(trainer_n))
    if s["gpus"] is not None:
        server = list(s["gpus"])
    else:
        start = max(trainer, default=-1) + 1
        server = list(range(start, start + server_n))
    return server, trainer


def check_local_gpus(cfg: dict, facts: Facts) -> list[Problem]:
    if cfg["cluster"]["backend"] != "local":
        return []
    s, t = cfg["server"], cfg["trainer"]
    problems = []
    if t["nodes"] != 1 or (cfg["mode"] == "server" and s["nodes"] != 1):
        problems.append(Problem(("server.nodes", "trainer.nodes"), "the local backend runs on one machine: set both to 1"))
        return problems
    server, trainer = _local_gpu_sets(cfg)
    if cfg["mode"] == "server" and len(server) != s["gpus_per_node"]:
        problems.append(Problem(("server.gpus", "server.gpus_per_node"),
                                f"server.gpus lists {len(server)} GPUs but server.gpus_per_node is {s['gpus_per_node']}"))
    if len(trainer) != t["gpus_per_node"]:
        problems.append(Problem(("trainer.gpus", "trainer.gpus_per_node"),
                                f"trainer.gpus lists {len(trainer)} GPUs but trainer.gpus_per_node is {t['gpus_per_node']}"))
    overlap = sorted(set(server) & set(trainer)) if cfg["mode"] == "server" else []
    if overlap:
        problems.append(Problem(("server.gpus", "trainer.gpus"),
                                f"server and trainer share GPU(s) {overlap}: NCCL weight sync refuses two ranks "
                                "on one GPU ('Duplicate GPU detected'); give them disjoint GPUs, or use mode=colocate"))
    if facts.local_gpus:  # 0/None = no CUDA here: the CPU fallback runs instead
        missing = sorted(g for g in set(server) | set(trainer) if g >= facts.local_gpus or g < 0)
        if missing:
            problems.append(Problem(("server.gpus", "trainer.gpus", "server.gpus_per_node", "trainer.gpus_per_node"),
                                    f"GPU(s) {missing} do not exist: this machine has {facts.local_gpus} "
                                    f"(ids 0..{facts.local_gpus - 1})"))
    return problems


def check_slurm_facts(cfg: dict, facts: Facts) -> list[Problem]:
    if cfg["cluster"]["backend"] != "slurm" or facts.partitions is None:
        return []
    partition = cfg["cluster"]["partition"] or facts.default_partition
    if partition is None or not SLURM_NAME.match(str(partition)):
        return []
    missing = [p for p in str(partition).split(",") if p not in facts.partitions]
    if missing:
        return [Problem(("cluster.partition",),
                        f"partition {missing[0]!r} does not exist (sinfo lists: {', '.join(sorted(facts.partitions))})")]
    partition = str(partition).split(",")[0]  # sbatch picks one of a list; judge by the first
    info = facts.partitions[partition]
    problems = []
    components = [("trainer", cfg["trainer"])] + ([("server", cfg["server"])] if cfg["mode"] == "server" else [])
    for name, comp in components:
        if cfg["device"] == "cpu":
            break  # no GPUs are requested (--gpus-per-node is not rendered)
        if info.get("gpus_per_node") is not None and comp["gpus_per_node"] > info["gpus_per_node"]:
            problems.append(Problem((f"{name}.gpus_per_node", "cluster.partition"),
                                    f"{comp['gpus_per_node']} GPUs per node requested, but nodes of partition "
                                    f"{partition!r} have at most {info['gpus_per_node']}"))
    needed = cfg["trainer"]["nodes"] + (cfg["server"]["nodes"] if cfg["mode"] == "server" else 0)
    if info.get("nodes") is not None and needed > info["nodes"]:
        problems.append(Problem(("server.nodes", "trainer.nodes", "cluster.partition"),
                                f"{needed} nodes needed (components never share a node), partition {partition!r} "
                                f"has {info['nodes']}"))
    if info.get("max_time_s") is not None:
        try:
            if parse_walltime(cfg["cluster"]["time"]) > info["max_time_s"]:
                problems.append(Problem(("cluster.time",),
                                        f"exceeds the time limit of partition {partition!r} ({info['max_time_s']} s)"))
        except ValueError:
            pass
    return problems


RULES: tuple[Callable[[dict, Facts], list[Problem]], ...] = (
    check_name, check_counts, check_server_topology, check_tensor_parallel_heads, check_data_parallel_dense,
    check_grpo_fields, check_grpo_counts, check_grpo_batch, check_lengths, check_extra_args, check_walltime,
    check_timeouts, check_ports, check_paths, check_local_files, check_rewards, check_env, check_sbatch,
    check_local_gpus, check_slurm_facts,
)


def validate(cfg: dict, facts: Facts = Facts()) -> list[Problem]:
    """All problems (errors and warnings) of a composed config."""
    problems: list[Problem] = []
    for rule in RULES:
        problems += rule(cfg, facts)
    return problems


def local_gpu_sets(cfg: dict) -> tuple[list[int], list[int]]:
    """(server GPUs, trainer GPUs) of the local backend, after validation."""
    return _local_gpu_sets(cfg)



