"""The Plan: a pure, validated, printable description of the job (pure data; to_json / from_json).

build_plan (launcher/plan/build.py) makes it from the typed config; the in-job parts (supervisor, server
wrapper, trainer step, trainer) read the same Plan back from plan.json in the job folder, so what the
dry-run prints is what runs. Commands may hold placeholders that only the job can fill
(launcher/plan/placeholders.py): {attempt_dir}, {host}, {port}, {machine_rank}, {main_process_ip},
{main_process_port}, {trl_accelerate_configs}; {job_dir} appears only in settings (grpo.output_dir, the
batch output), never as a command argument: the job folder reaches the job as LAUNCHER_JOB_DIR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from launcher.plan.containers import Container, from_dict
from launcher.plan.render import render_plan
from launcher.validate.problems import InvalidConfig, Problem
from launcher.validate.resources import ResourceRequest


@dataclass(frozen=True)
class Component:
    name: str  # "server" | "trainer"
    het_group: Optional[int]  # Slurm het group; None in a plain (colocate) job
    nodes: int
    gpus_per_node: int
    sbatch: dict[str, Any]  # this component's #SBATCH flags, in order
    env: dict[str, str]  # exported into this component's steps
    step: list[str]  # what the step runs on each node (the launcher's own wrapper)
    execs: list[str]  # what that wrapper execs (placeholders filled in the job)
    gpus: Optional[list[int]] = None  # local backend: CUDA_VISIBLE_DEVICES
    resources: Optional[ResourceRequest] = None  # Slurm: CPUs and memory per node, and why
    container: Optional[Container] = None  # the image the step runs in (None: the host); plan/containers.py


@dataclass(frozen=True)
class LoraSpec:
    """model.lora with its defaults resolved (launcher.train.lora builds peft's LoraConfig from it)."""

    rank: int
    alpha: float
    dropout: float
    target_modules: Any = None  # a list of module names, "all-linear", or None (peft's default for the architecture)
    modules_to_save: Optional[list] = None


@dataclass(frozen=True)
class ModelSpec:
    name_or_path: str  # hub id or local folder
    revision: Optional[str] = None
    trust_remote_code: bool = False
    lora: Optional[LoraSpec] = None  # None: full fine-tuning


@dataclass(frozen=True)
class DataSpec:
    name_or_path: str  # hub id, local folder, or a .json/.jsonl/.parquet file
    split: str = "train"
    config_name: Optional[str] = None
    max_samples: Optional[int] = None
    revision: Optional[str] = None
    prompt_column: str = "prompt"
    prompt_template: Optional[str] = None
    system_prompt: Optional[str] = None
    reward_columns: dict = field(default_factory=dict)  # reward argument -> dataset column
    # data.mixture: [{name_or_path, weight, split, config_name, revision}] (name_or_path above = the first's)
    mixture: Optional[list] = None
    seed: int = 42

    def sources(self) -> list[dict]:
        """Every dataset the job reads, each with its split, config, revision and weight."""
        if self.mixture:
            return [dict(m) for m in self.mixture]
        if self.name_or_path is None:
            return []  # trainer.script without data keys: the script loads its own
        return [{"name_or_path": self.name_or_path, "split": self.split, "config_name": self.config_name,
                 "revision": self.revision, "weight": 1.0}]


@dataclass(frozen=True)
class RewardSpec:
    funcs: list[str]  # import paths of the reward functions
    weights: Optional[list[float]] = None
    timeout_s: Optional[float] = None  # reward.timeout_s (None: no limit, as plans written before the key)


@dataclass(frozen=True)
class TrackingSpec:
    """grpo.report_to's W&B / TensorBoard with tracking.* (launcher.jobfolder.tracking makes the job's run from it)."""

    backends: list  # the ones kept as one run per job: "wandb", "tensorboard"
    project: Optional[str] = None  # null: $WANDB_PROJECT at submission, else the job's name
    entity: Optional[str] = None
    group: Optional[str] = None  # null: the sweep's folder name for a sweep's points
    tags: list = field(default_factory=list)
    wandb_mode: Optional[str] = None  # resolved: offline when cluster.offline; null = $WANDB_MODE or online

    @property
    def wandb(self) -> bool:
        return "wandb" in self.backends

    @property
    def tensorboard(self) -> bool:
        return "tensorboard" in self.backends


@dataclass(frozen=True)
class Policies:
    startup_timeout_s: float
    health_grace_s: float
    watchdog_timeout_s: float
    checkpoint_timeout_s: float
    stop_grace_s: float
    signal_before_end_s: int
    max_requeues: int
    server_port: Optional[int]  # None: a free port picked on the server node
    server_host: Optional[str]  # None: the node's cluster address
    group_port: Optional[int]  # None: a free port picked by the trainer's rank 0
    main_process_port: Optional[int]  # None: derived from the job id
    requeue_on_node_failure: bool = False  # a lost node: requeue and resume (True) or end FAILED (False)
    preflight_prompts: int = 4  # prompts generated by a preflight
    network_interface: Optional[str] = None  # cluster.network_interface: the interface whose address the job uses
    server_token: bool = True  # server.require_token: the server answers only requests with the attempt's token
    sync_timeout_s: float = 300.0  # trainer.sync_timeout_s: the bound on one weight sync (both sides of the CPU sync)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def plain(value: Any) -> Any:
    """What dataclasses.asdict gives for JSON (dataclasses as dicts, tuples as lists), without its deep copy
    of every value: plan.json is written once per point of a sweep."""
    names = _FIELD_NAMES.get(type(value))
    if names is None and is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in fields(value))
    if names is not None:
        return {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Plan:
    name: str
    backend: str  # "slurm" | "local"
    mode: str  # "server" | "colocate"
    device: str  # "auto" | "cuda" | "cpu"
    walltime_s: int
    python: str
    components: list[Component]
    job_sbatch: dict[str, Any]  # job-wide flags, rendered in component 0's block
    setup: list[str]  # shell lines before each component (module load, venv activation)
    env: dict[str, str]  # exported into every component
    secret_env: list[str]  # names passed through from the submitting environment, values never written
    grpo: dict[str, Any]  # GRPOConfig kwargs (launcher-owned ones filled in the job)
    preflight: bool
    policies: Policies
    model: ModelSpec
    data: DataSpec
    reward: RewardSpec
    warnings: list[str] = field(default_factory=list)
    offline: bool = False  # cluster.offline: the hub model and dataset are staged at submission, the job runs offline
    hf_home: Optional[str] = None  # the Hugging Face cache the job reads (HF_HOME), when set or offline
    cache_dir: Optional[str] = None  # the root of the components' compile caches (launcher/components/caches.py)
    tracking: Optional[TrackingSpec] = None  # W&B / TensorBoard, one run per job (None: neither in grpo.report_to)

    def component(self, name: str) -> Optional[Component]:
        return next((c for c in self.components if c.name == name), None)

    @property
    def heterogeneous(self) -> bool:
        return len(self.components) > 1

    def to_json(self) -> str:
        return json.dumps(plain(self), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        data = json.loads(text)
        data["components"] = [Component(**{**c, "resources": ResourceRequest(**c["resources"]) if c.get("resources")
                                           else None, "container": from_dict(c.get("container"))})
                              for c in data["components"]]
        data["policies"] = Policies(**data["policies"])
        lora = data["model"].get("lora")
        data["model"] = ModelSpec(**{**data["model"], "lora": LoraSpec(**lora) if lora else None})
        data["data"] = DataSpec(**data["data"])
        data["reward"] = RewardSpec(**data["reward"])
        data["tracking"] = TrackingSpec(**data["tracking"]) if data.get("tracking") else None
        return cls(**data)

    def __str__(self) -> str:
        return render_plan(self)


__all__ = ["Component", "DataSpec", "InvalidConfig", "TrackingSpec", "LoraSpec", "ModelSpec", "Plan", "Policies", "Problem", "RewardSpec",
           "render_plan"]
