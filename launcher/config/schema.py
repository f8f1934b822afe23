"""The typed configuration schema, registered in Hydra's ConfigStore.

Every user-facing key lives here with its type and default; `docs/configuration.md` is generated
from these dataclasses (scripts/gen_config_docs.py) and a test keeps it current. Unknown keys and
wrong types fail at composition with Hydra's own message. `grpo` is an open mapping because any
GRPOConfig field may be set; its keys and types are checked against launcher/grpo_fields.json in
the plan (TRL itself is not installed on a login node).

The composed config reaches validation and the plan builder as these objects (launcher/config/compose.py:
`OmegaConf.to_object`), with Enum members for the choices; `grpo` and the env/sbatch mappings stay dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


class Strategy(str, Enum):
    """TRL's packaged accelerate configs (trl/accelerate_configs/*.yaml)."""

    ddp = "ddp"
    zero2 = "zero2"
    zero3 = "zero3"
    fsdp2 = "fsdp2"


class Backend(str, Enum):
    slurm = "slurm"
    local = "local"


class Mode(str, Enum):
    """`server`: a separate vLLM server component (a heterogeneous job).
    `colocate`: vLLM runs inside the trainer processes (one plain job, no server)."""

    server = "server"
    colocate = "colocate"


class ContainerRuntime(str, Enum):
    """How a component's step runs inside an image (docs/containers.md). `none`: on the host."""

    none = "none"
    pyxis = "pyxis"  # Slurm's enroot plugin: srun --container-image ...
    apptainer = "apptainer"  # apptainer exec --nv --bind ... IMAGE CMD
    singularity = "singularity"  # singularity exec, same flags as apptainer
    charliecloud = "charliecloud"  # ch-run (Debian 12: charliecloud), an unpacked directory image


@dataclass
class ContainerConfig:
    """The image the components run in (docs/containers.md); server.container / trainer.container: the same keys, null = cluster.container's."""

    runtime: Optional[ContainerRuntime] = None  # pyxis, apptainer, singularity, charliecloud, none; null = the cluster's (none)
    image: Optional[str] = None  # image: a .sif/.sqsh file, a directory (charliecloud), or an enroot/docker URI (pyxis)
    mounts: Optional[List[str]] = None  # "src:dst[:opts]" bind mounts; the job folder is always bound at its own path
    workdir: Optional[str] = None  # working directory inside the container; null = the runtime's default
    flags: Optional[List[str]] = None  # extra flags for the runtime (pyxis: extra srun flags)
    env: Optional[List[str]] = None  # further variables passed into the container by name (values from the host)


class ServerEntrypoint(str, Enum):
    """What component 0 execs. `trl`: `trl vllm-serve` (TRL's wrapper, deprecated until TRL 2.0). `vllm`: `vllm serve`
    directly with exactly the flags and VLLM_SERVER_DEV_MODE=1 that TRL's wrapper imposes."""

    trl = "trl"
    vllm = "vllm"


class Device(str, Enum):
    """Where the components compute. `auto`: CUDA when the job sees a GPU, else CPU."""

    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


@dataclass
class ServerConfig:
    """Component 0: the vLLM server (`trl vllm-serve`, or `vllm serve` with server.entrypoint=vllm)."""

    entrypoint: ServerEntrypoint = ServerEntrypoint.trl  # trl: `trl vllm-serve`; vllm: `vllm serve` with TRL's flags (docs/anatomy.md)
    nodes: int = 1  # nodes of the server component (1: a server spans one node; docs/cluster-cookbook.md)
    gpus_per_node: Optional[int] = None  # GPUs per server node; null = TP x DP / nodes (sweeps follow TP, DP)
    tensor_parallel_size: int = 1  # vLLM --tensor-parallel-size
    data_parallel_size: int = 1  # vLLM --data-parallel-size (dense models: keep 1)
    port: Optional[int] = None  # HTTP port; null = a free port picked on the node in the job
    host: Optional[str] = None  # bind address; null = the node's cluster address (never 0.0.0.0 unless set)
    gpu_memory_utilization: float = 0.9  # vLLM --gpu-memory-utilization
    max_model_len: Optional[int] = None  # vLLM --max-model-len
    enforce_eager: bool = False  # vLLM --enforce-eager (faster start, slower generation)
    distributed_executor_backend: Optional[str] = None  # vLLM's executor on the server's one node: null (vLLM picks), mp, uni
    startup_timeout_s: float = 1200.0  # fail the job if /health is not 200 after this long
    health_grace_s: float = 60.0  # a healthy server that stops answering this long is dead
    require_token: bool = True  # only this job gets in: every endpoint but GET /health needs its token (docs/security.md)
    extra_args: List[str] = field(default_factory=list)  # passed through to the entrypoint (trl: TRL's flags; vllm: vLLM's)
    env: Dict[str, str] = field(default_factory=dict)  # exported into the server component only
    cpus_per_gpu: Optional[int] = None  # CPUs per server GPU; null = the node's share (node CPUs x GPUs / node GPUs)
    mem_per_gpu: Optional[str] = None  # memory per server GPU (64G, 500M); null = the node's share, like CPUs
    sbatch: Dict[str, Any] = field(default_factory=dict)  # further #SBATCH flags for component 0
    gpus: Optional[List[int]] = None  # local backend: GPU ids of the server (null = after the trainer's)
    container: ContainerConfig = field(default_factory=ContainerConfig)  # null keys = cluster.container's


@dataclass
class TrainerConfig:
    """Component 1: the GRPO trainer under `accelerate launch`."""

    nodes: int = 1  # nodes of the trainer component
    gpus_per_node: int = 1  # GPUs (= processes) per trainer node; on CPU, the processes per node
    strategy: Strategy = Strategy.ddp  # TRL's packaged accelerate config
    preflight: bool = False  # check server, generate + score a few prompts, exit (no training)
    preflight_prompts: int = 4  # prompts generated in preflight mode
    use_vllm: bool = True  # false: generate inside the trainer (tests, CPU debugging)
    main_process_port: Optional[int] = None  # accelerate rendezvous port; null = derived per job
    group_port: Optional[int] = None  # vllm_group_port (NCCL weight sync); null = a free port per job
    watchdog_timeout_s: float = 1800.0  # no heartbeat for this long = hung trainer (covers model load)
    sync_timeout_s: float = 300.0  # one weight sync to the server (CPU/gloo) longer than this fails the job
    script: Optional[str] = None  # your own training script (docs/bring-your-own.md); null = the launcher's trainer
    script_args: List[str] = field(default_factory=list)  # arguments after the script (its sys.argv[1:])
    extra_args: List[str] = field(default_factory=list)  # passed through to `accelerate launch`
    env: Dict[str, str] = field(default_factory=dict)  # exported into the trainer component only
    cpus_per_gpu: Optional[int] = None  # CPUs per trainer GPU; null = the node's share (node CPUs x GPUs / node GPUs)
    mem_per_gpu: Optional[str] = None  # memory per trainer GPU (64G, 500M); null = the node's share, like CPUs
    sbatch: Dict[str, Any] = field(default_factory=dict)  # further #SBATCH flags for component 1
    gpus: Optional[List[int]] = None  # local backend: GPU ids of the trainer (null = the first ones)
    container: ContainerConfig = field(default_factory=ContainerConfig)  # null keys = cluster.container's


@dataclass
class LoraConfig:
    """LoRA through peft (docs/bring-your-own.md, LoRA): set model.lora.rank and GRPOTrainer trains a LoRA adapter
    (its peft_config; TRL's --use_peft --lora_r ...). The server gets the merged weights at every sync (TRL merges,
    sends, unmerges); checkpoints and the final output hold the adapter only (adapter_model.safetensors). A
    target module the model lacks: a local model's weight names are read before queueing, a hub model's when
    the trainer loads it (the job ends at once naming model.lora.target_modules). The task type is CAUSAL_LM
    (GRPO trains causal LMs only)."""

    rank: Optional[int] = None  # LoRA rank r (TRL's lora_r); null = no LoRA (the whole model trains)
    alpha: Optional[float] = None  # lora_alpha; null = 2 x rank (TRL's default ratio: 32 for r=16)
    dropout: float = 0.05  # lora_dropout, 0 <= dropout < 1
    target_modules: Any = None  # module names ([q_proj, v_proj]) or all-linear; null = peft's default for the architecture
    modules_to_save: Optional[List[str]] = None  # modules trained in full and saved beside the adapter (lm_head, embed_tokens)


@dataclass
class ModelConfig:
    name_or_path: str = MISSING  # hub id or local folder
    revision: Optional[str] = None  # hub revision (branch, tag or commit)
    trust_remote_code: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)  # model.lora.*: LoRA instead of full fine-tuning


@dataclass
class DataSource:
    """One dataset of data.mixture."""

    name_or_path: str = MISSING  # hub id, local folder, or a .json/.jsonl/.csv/.parquet file
    weight: float = 1.0  # sampling weight (the weights are normalised)
    split: Optional[str] = None  # null = data.split
    config_name: Optional[str] = None
    revision: Optional[str] = None


@dataclass
class DataConfig:
    """The training dataset and how its columns become TRL's: `prompt` comes from data.prompt_column, or from
    data.prompt_template filled from each row (quote it on the command line: `'data.prompt_template="Solve:
    {question}"'`), with data.system_prompt put first as a system message; the reward functions get every
    column, plus the ones data.reward_columns maps (`+data.reward_columns.solution=answer`: TRL's
    accuracy_reward reads `solution`). A local json/jsonl/csv/parquet file's columns are checked before
    anything is queued (its first rows, a parquet file's footer); a folder or a hub dataset when the trainer
    loads it, first thing in the job: the job ends at once naming the key, the missing column and the
    columns there are.
    data.mixture (`[{name_or_path: a.jsonl, weight: 0.7}, {name_or_path: org/b, weight: 0.3}]`, each entry
    also with split, config_name, revision) interleaves several datasets, a row drawn from each with its
    weight's share (seeded by data.seed, stopping when one runs out); their shared columns are kept."""

    name_or_path: Optional[str] = None  # hub id, local folder, or a .json/.jsonl/.csv/.parquet file (required unless data.mixture)
    split: str = "train"
    config_name: Optional[str] = None  # dataset configuration (subset) name
    revision: Optional[str] = None  # hub revision of a hub dataset (branch, tag or commit); null = main
    max_samples: Optional[int] = None  # keep only the first N rows (of the mixture, when data.mixture)
    prompt_column: str = "prompt"  # the column that holds the prompt (text or chat messages)
    prompt_template: Optional[str] = None  # a prompt built from columns, e.g. "Solve: {question}" (replaces prompt_column)
    system_prompt: Optional[str] = None  # a system message put before every prompt (the prompt becomes chat messages)
    reward_columns: Dict[str, str] = field(default_factory=dict)  # reward argument -> dataset column, e.g. {solution: answer}
    mixture: Optional[List[DataSource]] = None  # several datasets interleaved by weight (seeded) instead of name_or_path
    seed: Optional[int] = None  # the mixture's sampling seed; null = grpo.seed, else 42


@dataclass
class RewardConfig:
    funcs: List[str] = field(default_factory=lambda: ["trl.rewards.accuracy_reward"])  # import paths
    weights: Optional[List[float]] = None  # GRPOConfig.reward_weights, one per function
    timeout_s: Optional[float] = 600.0  # one call of a reward function past this ends the job naming it (stalled), its stacks saved; null = no limit


@dataclass
class TrackingConfig:
    """Experiment tracking (docs/tracking.md), turned on by grpo.report_to (TRL's key: [wandb, tensorboard]). One
    W&B run per job: its id is made at submission and kept in the job folder, so every attempt of a requeued job
    continues it; TensorBoard writes <job>/tensorboard. The W&B API key comes from your environment only
    (WANDB_API_KEY, in cluster.secret_env)."""

    project: Optional[str] = None  # W&B project; null = $WANDB_PROJECT, else the job's name
    entity: Optional[str] = None  # W&B entity (team or user); null = $WANDB_ENTITY, else your default
    group: Optional[str] = None  # W&B group; null = sweep-<sweep folder name> for a sweep's points, $WANDB_RUN_GROUP or none for one job
    tags: List[str] = field(default_factory=list)  # W&B tags (a sweep's points also get sweep-<sweep folder name>)
    wandb_mode: Optional[str] = None  # online, offline or disabled; null = offline when cluster.offline, else $WANDB_MODE or online


@dataclass
class ClusterConfig:
    backend: Backend = Backend.slurm  # set by the cluster group (cluster=slurm | cluster=local)
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: str = "04:00:00"  # walltime: [D-]HH:MM:SS, MM:SS or minutes
    constraint: Optional[str] = None
    exclusive: bool = False  # whole nodes for every component (--exclusive --mem=0) instead of their GPU share
    network_interface: Optional[str] = None  # ib0, hsn0...: server address, rendezvous, NCCL/Gloo; null = the node name's
    sbatch: Dict[str, Any] = field(default_factory=dict)  # further #SBATCH flags for both components
    setup: List[str] = field(default_factory=list)  # shell lines run before each component (module load ...)
    env: Dict[str, str] = field(default_factory=dict)  # exported into both components (no secrets here)
    secret_env: List[str] = field(
        default_factory=lambda: ["HF_TOKEN", "WANDB_API_KEY"]
    )  # names passed from your environment into the job, never written anywhere
    python: Optional[str] = None  # interpreter on the nodes (inside the image with a container); null = the one running the launcher
    container: ContainerConfig = field(default_factory=ContainerConfig)  # the image the components run in (docs/containers.md)
    offline: bool = False  # nodes without internet: stage the hub model + dataset into hf_home at submission (docs/offline.md)
    hf_home: Optional[str] = None  # the Hugging Face cache the nodes share (HF_HOME); null = $HF_HOME, else ~/.cache/huggingface
    job_root: str = "jobs"  # job folders go under <job_root>/<name>/
    cache_dir: Optional[str] = None  # compile caches (vLLM, Triton, Inductor) of the server and the trainer, keyed per component, on storage the nodes share (bound into containers); null = <job_root>/.cache
    signal_before_end_s: int = 300  # USR2 this long before walltime: checkpoint, then requeue
    max_requeues: int = 3  # requeues after preemption or walltime (0 = never)
    requeue_on_node_failure: bool = False  # a lost node: false = the job ends FAILED naming it; true = requeue + resume
    checkpoint_timeout_s: float = 120.0  # how long the trainer gets to save before being stopped
    stop_grace_s: float = 10.0  # SIGTERM -> SIGKILL delay when stopping a component
    wait: bool = False  # Slurm: stay in the foreground and show progress until the job ends
    submit_rate_per_s: float = 2.0  # sweeps: at most this many sbatch calls per second
    submit_retries: int = 5  # transient sbatch failures retried with backoff


@dataclass
class LaunchConfig:
    name: str = "grpo"  # job name (Slurm job name and job folder)
    mode: Mode = Mode.server  # server: separate vLLM server (het job); colocate: vLLM inside the trainer (one GPU ok)
    device: Device = Device.auto  # auto: CUDA where the job sees a GPU, else the CPU fallback
    dry_run: bool = False  # print the plan and the exact sbatch script; submit nothing
    server: ServerConfig = field(default_factory=ServerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # W&B / TensorBoard (grpo.report_to turns them on)
    grpo: Dict[str, Any] = field(default_factory=dict)  # any trl.GRPOConfig field
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def register() -> None:
    """Register the schema so conf/config.yaml can use it as its base."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="launch_schema", node=LaunchConfig)
