"""Every file name of a job folder, in one place (docs/anatomy.md shows the layout).

  <job_root>/<name>/<YYYYmmdd-HHMMSS>-<suffix>/     the job folder (private, never written over)
    config.yaml plan.txt plan.json commands.txt job.sbatch submission.json git.txt git.diff sweep_point.json
    tracking.json wandb-config.yaml                W&B / TensorBoard: one run per job (launcher.jobfolder.tracking)
    wandb/ tensorboard/                            that run's files, written by every attempt
    submitit/                                      submitit's pickles and the batch step's own output
    attempt-1/ attempt-2/ ...                      one per run of the job (a requeue starts the next)
      supervisor.log server.log trainer.log        each component's log
      status.json result.json server.json          the supervisor's phase, the attempt's end, the server's address
      server_ready.json                            the handover: the supervisor saw /health 200 there (the trainer waits for it)
      heartbeat.json metrics.jsonl versions.json preflight.json checkpoint.request checkpoint.done
      node-<component>-<host>.json rendezvous.json  each step's node record; trainer node 0's fabric address
      stacks/<component>-<host>-<pid>.txt          each process's Python stacks, written on request (launcher/faulthandlers.py)
      hang-<component>.txt                          what the supervisor captured when it declared that component hung
"""

# the job folder
CONFIG = "config.yaml"  # the resolved config, a record only: the job reads plan.json
PLAN_TEXT = "plan.txt"
PLAN = "plan.json"
COMMANDS = "commands.txt"
SBATCH_SCRIPT = "job.sbatch"
SUBMISSION = "submission.json"
GIT_SUMMARY = "git.txt"
GIT_DIFF = "git.diff"
SWEEP_POINT = "sweep_point.json"
TRACKING = "tracking.json"  # the job's W&B run (id, project, group, name, tags): every attempt continues it
WANDB_CONFIG = "wandb-config.yaml"  # the launch's config in W&B's config-file format, added to the run's config
TENSORBOARD_DIR = "tensorboard"  # every attempt's TensorBoard event files (TENSORBOARD_LOGGING_DIR)
SUBMITIT_DIR = "submitit"
ATTEMPT_PREFIX = "attempt-"

# an attempt folder
SUPERVISOR_LOG = "supervisor.log"
STATUS = "status.json"
RESULT = "result.json"
SERVER = "server.json"
SERVER_READY = "server_ready.json"  # written by the supervisor once /health answered 200; the trainer waits for it
HEARTBEAT = "heartbeat.json"
METRICS = "metrics.jsonl"
VERSIONS = "versions.json"
PREFLIGHT = "preflight.json"
CHECKPOINT_REQUEST = "checkpoint.request"
CHECKPOINT_DONE = "checkpoint.done"
RENDEZVOUS = "rendezvous.json"  # trainer node 0's address on cluster.network_interface, for the other nodes
STACKS_DIR = "stacks"  # one file per process of the job, opened at its start, filled when it is asked for its stacks


def component_log(component: str) -> str:
    """server.log, trainer.log, supervisor.log."""
    return f"{component}.log"


def node_record(component: str, host: str) -> str:
    """node-server-node1.json: what a component's step saw and did on one node (CPUs, threads, address,
    hygiene), written by its wrapper before it execs."""
    return f"node-{component}-{host}.json"


def stacks_file(component: str, host: str, pid: int) -> str:
    """stacks/trainer-node2-4711.txt: where that process's faulthandler writes its stacks."""
    return f"{component}-{host}-{pid}.txt"


def hang_report(component: str) -> str:
    """hang-trainer.txt: the stacks, nvidia-smi and log tails the supervisor captured before ending a hang."""
    return f"hang-{component}.txt"


# how every process of the job finds its folders (set by the sbatch script and by the supervisor)
JOB_DIR_ENV = "LAUNCHER_JOB_DIR"
ATTEMPT_DIR_ENV = "LAUNCHER_ATTEMPT_DIR"
COMPONENT_ENV = "LAUNCHER_COMPONENT"  # "server" | "trainer", set by the step wrapper before it execs
