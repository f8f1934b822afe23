"""Rules on `grpo` (any trl.GRPOConfig field): names, types and choices against launcher/grpo_fields.json,
the counts TRL divides by, the numbers TRL accepts that leave a run meaningless (a learning rate of 0 or
less, max_steps=0, ...), the generation batch against num_generations and the trainer's processes, and
completion lengths against the server's and the model's context.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Optional

from launcher.config.derive import trainer_processes
from launcher.config.schema import LaunchConfig, Mode
from launcher.validate.problems import Facts, Problem
from launcher.validate.topology import model_config

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
GRPO_POSITIVE = ("per_device_train_batch_size", "gradient_accumulation_steps", "generation_batch_size",
                 "steps_per_generation", "max_completion_length", "num_iterations")


@dataclass(frozen=True)
class Range:
    """Where a number TRL accepts still makes a run mean something; None = unbounded on that side."""

    low: Optional[float]
    high: Optional[float] = None
    low_included: bool = False
    high_included: bool = True
    why: str = ""

    def holds(self, value: float) -> bool:
        above = self.low is None or value > self.low or (self.low_included and value == self.low)
        below = self.high is None or value < self.high or (self.high_included and value == self.high)
        return above and below

    def text(self) -> str:
        low = "" if self.low is None else f"{'>=' if self.low_included else '>'} {self.low:g}"
        high = "" if self.high is None else f"{'<=' if self.high_included else '<'} {self.high:g}"
        return " and ".join(p for p in (low, high) if p)


# GRPOConfig numbers TRL takes without a word but that leave a run meaningless (or failing hours in)
GRPO_RANGES: dict[str, Range] = {
    "learning_rate": Range(0, why="a step of 0 does not train, a negative one trains away from the reward"),
    "temperature": Range(0, why="at 0 every completion of a prompt is the same: zero advantages, nothing learned"),
    "top_p": Range(0, 1, why="the share of probability mass sampled from"),
    "min_p": Range(0, 1, low_included=True),
    "top_k": Range(-1, low_included=True, why="-1 or 0: no top-k cut"),
    "repetition_penalty": Range(0, why="1 leaves the logits as they are"),
    "beta": Range(0, low_included=True, why="a negative KL coefficient rewards drifting away from the reference model"),
    "epsilon": Range(0, why="the clipping range of the policy ratio"),
    "epsilon_high": Range(0, why="the upper clipping range of the policy ratio"),
    "warmup_steps": Range(0, low_included=True),
    "weight_decay": Range(0, low_included=True),
    "max_grad_norm": Range(0, low_included=True, why="0 turns clipping off"),
    "save_steps": Range(0, why="a checkpoint every N steps (or a fraction < 1 of the run)"),
    "logging_steps": Range(0),
    "eval_steps": Range(0),
    "adam_beta1": Range(0, 1, low_included=True, high_included=False),
    "adam_beta2": Range(0, 1, low_included=True, high_included=False),
    "adam_epsilon": Range(0),
    "vllm_server_timeout": Range(0, why="seconds the trainer waits for the server"),
}


@lru_cache(maxsize=1)
def grpo_fields() -> dict[str, Any]:
    """GRPOConfig's fields (name -> {"type", "default"}), dumped from TRL by scripts/gen_grpo_fields.py."""
    text = resources.files("launcher").joinpath("grpo_fields.json").read_text()
    return json.loads(text)


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


def check_grpo_fields(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    fields = grpo_fields()["fields"]
    problems = []
    for key, value in cfg.grpo.items():
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


def check_grpo_counts(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """Counts TRL divides by or loops over: 0 or less fails in GRPOConfig, after the job has queued."""
    problems = []
    for key in GRPO_POSITIVE:
        value = cfg.grpo.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            problems.append(Problem((f"grpo.{key}",), f"must be at least 1, got {value}"))
    samples = cfg.data.max_samples
    if samples is not None and samples < 1:
        problems.append(Problem(("data.max_samples",), f"must be at least 1 or null (all rows), got {samples}"))
    return problems


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_grpo_ranges(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """Numbers TRL accepts that make the run meaningless: a learning rate of 0 or less, max_steps=0, ..."""
    g = cfg.grpo
    problems = []
    for key, allowed in GRPO_RANGES.items():
        value = g.get(key)
        if _number(value) and not allowed.holds(value):
            why = f" ({allowed.why})" if allowed.why else ""
            problems.append(Problem((f"grpo.{key}",), f"must be {allowed.text()}, got {value:g}{why}"))
    steps = g.get("max_steps")
    if _number(steps) and steps != -1 and steps < 1:
        problems.append(Problem(("grpo.max_steps",), f"must be at least 1, or -1 to train for grpo.num_train_epochs, "
                                                     f"got {steps:g} (0 steps train nothing)"))
    epochs = g.get("num_train_epochs")
    if _number(epochs) and epochs <= 0 and not (_number(steps) and steps >= 1):
        problems.append(Problem(("grpo.num_train_epochs", "grpo.max_steps"),
                                f"must be > 0 when grpo.max_steps is not set, got {epochs:g} (no epoch, no step)"))
    return problems


def check_grpo_batch(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    g = cfg.grpo
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


def check_model_context(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """The server's context against the model's (max_position_embeddings of its config.json, local or in the
    hub cache): vLLM refuses a longer max_model_len at start; without one, a completion as long as the model's
    context leaves no room for the prompt. Skipped when rope scaling stretches the context (vLLM derives it)."""
    found = model_config(cfg)
    if found is None:
        return []
    text = found[0].get("text_config") or found[0]
    context = text.get("max_position_embeddings")
    if not isinstance(context, int) or text.get("rope_scaling"):
        return []
    max_len = cfg.server.max_model_len if cfg.mode == Mode.server else None
    allowed = "VLLM_ALLOW_LONG_MAX_MODEL_LEN" in {**cfg.cluster.env, **cfg.server.env}
    if isinstance(max_len, int) and max_len > context and not allowed:
        return [Problem(("server.max_model_len",), f"{max_len} is longer than the model's context ({context} tokens, "
                                                   f"max_position_embeddings in {found[1]}): vLLM refuses to start")]
    completion = cfg.grpo.get("max_completion_length", grpo_fields()["fields"]["max_completion_length"]["default"])
    if max_len is None and isinstance(completion, int) and completion >= context:
        return [Problem(("grpo.max_completion_length",),
                        f"completions of up to {completion} tokens leave no room for the prompt in the model's context "
                        f"of {context} tokens (max_position_embeddings in {found[1]})")]
    return []


def check_lengths(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """A completion as long as the server's whole context leaves no room for the prompt: vLLM rejects
    every request ("maximum context length") once training starts."""
    if cfg.mode != Mode.server or not cfg.trainer.use_vllm:
        return []
    max_len = cfg.server.max_model_len
    completion = cfg.grpo.get("max_completion_length", grpo_fields()["fields"]["max_completion_length"]["default"])
    if isinstance(max_len, int) and max_len < 1:
        return [Problem(("server.max_model_len",), f"must be at least 1 or null (the model's), got {max_len}")]
    if isinstance(max_len, int) and isinstance(completion, int) and completion >= max_len:
        return [Problem(("grpo.max_completion_length", "server.max_model_len"),
                        f"completions of up to {completion} tokens leave no room for the prompt in the server's "
                        f"context of {max_len} tokens: raise server.max_model_len or lower max_completion_length")]
    return []
