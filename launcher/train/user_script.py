"""Your own training script as the trainer (trainer.script): `python -m launcher.train.user_script <script>
<args>`, under `accelerate launch` like launcher.train, running the copy frozen into `<job>/code/` at submission
(launcher.jobfolder.frozen_code) with runpy, as `python <script> <args>` would.

Before the script runs, two TRL classes are wrapped (the classes themselves, so `from trl import ...` in
the script gets them), so a script that knows nothing of the launcher (TRL's vLLM guide's, unmodified) runs
with what launcher.train gets:

- `GRPOConfig(...)`: every field the script does not pass takes the job's value where the job has one:
  the plan's grpo (your grpo.* keys, use_vllm, vllm_mode, output_dir = <job>/output), vllm_group_port, on
  CPU use_cpu/bf16=false. What the script passes wins; vllm_server_host/port passed by the script keep the
  server URL theirs. Which fields the launcher filled is kept on the config (`_launcher_filled`).
- `GRPOTrainer(...)`: in server mode with a URL the launcher fills, waits for the supervisor's handover
  (launcher.train.handover: everything the script did before is the overlapped start) and sets the URL;
  adds the launcher's callback (heartbeats, metrics, checkpoint on request); builds under what
  launcher.train builds under (on CPU the gloo weight-sync client, launcher.sync.client; the job's server
  token on every request, launcher.train.server_token); model.lora as the peft_config unless the script passes
  one (launcher.train.lora); `train()` resumes from the newest complete checkpoint of its
  output_dir unless the script passes resume_from_checkpoint, and after a checkpoint stop ends the script
  (exit 0: the requeued attempt resumes) instead of running what follows train().
"""

from __future__ import annotations

import contextlib
import inspect
import runpy
import sys
from pathlib import Path
from typing import Any, Optional

from launcher import faulthandlers
from launcher.jobfolder import progress
from launcher.jobfolder.names import VERSIONS
from launcher.jobfolder.progress import TrainerPhase
from launcher.plan.user_code import CODE_DIR
from launcher.train.entry import describe
from launcher.train.errors import EXIT_BAD_JOB, EXIT_OK, JobError
from launcher.train.job import Job
from launcher.train.outcome import run_reported
from launcher.train.ranks import group_port
from launcher.train.report import HeartbeatWriter, error, say
from launcher.train.tracking import check_installed, mark_resume, tracking_callbacks
from launcher.train.versions import collect_versions

FILLED = "_launcher_filled"  # on each GRPOConfig: the fields the launcher filled
URL_FIELD = "vllm_server_base_url"
OWN_ADDRESS = ("vllm_server_host", "vllm_server_port")  # the script names its server itself


def launcher_values(job: Job) -> dict[str, Any]:
    """What a GRPOConfig field takes when the script leaves it unset (the URL: None until the handover)."""
    values = dict(job.grpo)
    if job.use_cpu:
        values.update(use_cpu=True, bf16=False, fp16=False)
    if job.server_mode:
        values[URL_FIELD] = job.server_url
        values["vllm_group_port"] = group_port(job.is_main)
    if not sys.stderr.isatty():
        values.setdefault("disable_tqdm", True)
    return values


def given_names(init: Any, args: tuple, kwargs: dict) -> set[str]:
    """The parameters a call to `init(self, *args, **kwargs)` passes explicitly."""
    return set(inspect.signature(init).bind_partial(None, *args, **kwargs).arguments) - {"self"}


def fill_unset(values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """The launcher's values for the fields the script did not give."""
    filled = {k: v for k, v in values.items() if k not in given}
    if given & set(OWN_ADDRESS):
        filled.pop(URL_FIELD, None)
    return filled


def patch_config(cls: type, values: dict[str, Any]) -> None:
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        filled = fill_unset(values, given_names(original, args, kwargs))
        original(self, *args, **{**kwargs, **filled})
        setattr(self, FILLED, frozenset(filled))

    __init__._launcher_original = original  # type: ignore[attr-defined]
    cls.__init__ = __init__


def _resume_kwargs(job: Job, output_dir: str, args: tuple, kwargs: dict) -> dict:
    if args or "resume_from_checkpoint" in kwargs:
        return kwargs  # the script's own choice
    from launcher.train.training import _resume_point

    return {**kwargs, "resume_from_checkpoint": _resume_point(output_dir, job.is_main)}


def wrap_train(trainer: Any, job: Job, beat: HeartbeatWriter, callback: Any) -> None:
    original = trainer.train

    def train(*args, **kwargs):
        kwargs = _resume_kwargs(job, trainer.args.output_dir, args, kwargs)
        mark_resume(job, kwargs.get("resume_from_checkpoint"))
        beat(TrainerPhase.TRAIN, resume_from=kwargs.get("resume_from_checkpoint"))
        result = original(*args, **kwargs)
        step = trainer.state.global_step
        if callback.checkpoint_step is not None and step < trainer.state.max_steps:
            beat(TrainerPhase.DONE, step, reason="checkpoint", checkpoint=callback.checkpoint_path)
            if job.is_main:
                say(f"stopped for a checkpoint at step {step}: {callback.checkpoint_path}; the script ends here")
            raise SystemExit(EXIT_OK)
        return result

    trainer.train = train


def patch_trainer(cls: type, config_cls: type, job: Job, beat: HeartbeatWriter) -> None:
    from launcher.train.callback import LauncherCallback
    from launcher.train.handover import server_url
    from launcher.train.lora import fill_script_peft_config
    from launcher.train.server_token import job_token
    from launcher.train.training import weight_sync

    original = cls.__init__
    signature = inspect.signature(original)

    def __init__(self, *args, **kwargs):
        bound = signature.bind_partial(self, *args, **kwargs)
        if bound.arguments.get("args") is None:
            bound.arguments["args"] = config_cls()  # GRPOTrainer's own default, with the launcher's values
        config = bound.arguments["args"]
        server = bool(config.use_vllm) and config.vllm_mode == "server"
        # before the wait: a target module the model lacks fails at once
        fill_script_peft_config(bound.arguments, job.plan.model.lora, job.plan.model.name_or_path, job.is_main)
        if server and URL_FIELD in getattr(config, FILLED, ()) and not getattr(config, URL_FIELD):
            setattr(config, URL_FIELD, server_url(job, beat))
        beat(TrainerPhase.BUILD_TRAINER)
        callback = LauncherCallback(job.attempt_dir, beat, job.is_main)
        bound.arguments["callbacks"] = [*(bound.arguments.get("callbacks") or []), callback, *tracking_callbacks(job)]
        # on CPU the gloo client (launcher.sync), and the job's token on the server's requests, as launcher.train
        with (weight_sync(job) if server else contextlib.nullcontext()), job_token():
            original(*bound.args, **bound.kwargs)
        callback.attach(self)
        wrap_train(self, job, beat, callback)
        if job.is_main:
            say(f"GRPOTrainer: server {getattr(config, URL_FIELD) if server else 'none'}, group port "
                f"{config.vllm_group_port}, output_dir {config.output_dir}; launcher-filled: "
                f"{', '.join(sorted(getattr(config, FILLED, ()))) or 'nothing'}")

    __init__._launcher_original = original  # type: ignore[attr-defined]
    cls.__init__ = __init__


def install(job: Job, beat: HeartbeatWriter) -> None:
    """Wrap GRPOConfig and GRPOTrainer (see the module docstring)."""
    from trl import GRPOConfig, GRPOTrainer

    if not hasattr(GRPOConfig.__init__, "_launcher_original"):
        patch_config(GRPOConfig, launcher_values(job))
    if not hasattr(GRPOTrainer.__init__, "_launcher_original"):
        patch_trainer(GRPOTrainer, GRPOConfig, job, beat)


def frozen_script(job_dir: Path, name: str) -> Path:
    path = job_dir / CODE_DIR / name
    if not path.is_file():
        raise JobError(f"{path} does not exist: trainer.script is copied there at submission (is this job folder "
                       "complete?)")
    return path


def run(job: Job, beat: HeartbeatWriter, argv: list[str]) -> int:
    script = frozen_script(job.job_dir, argv[0])
    if job.is_main:
        job.attempt_dir.mkdir(parents=True, exist_ok=True)
    beat(TrainerPhase.START)
    if job.is_main:
        say(describe(job, None))
        say(f"trainer: your script {argv[0]} (frozen at submission: {script}); server URL, group port, callback "
            "and output_dir given by the launcher unless the script sets them")
        progress.write_json_atomic(job.attempt_dir / VERSIONS, collect_versions(job.device))
    beat(TrainerPhase.LOAD_DATA, script=argv[0])  # what the script does first is its own (data, model)
    check_installed(job)
    install(job, beat)
    sys.argv = [str(script), *argv[1:]]
    sys.path.insert(0, str(script.parent))  # as `python script.py` does
    runpy.run_path(str(script), run_name="__main__")
    beat(TrainerPhase.DONE, beat.last_step(), reason="finished")
    if job.is_main:
        say(f"your script {argv[0]} finished")
    return EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    faulthandlers.install("trainer")
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        error("usage: python -m launcher.train.user_script <script under <job>/code> [args...]")
        return EXIT_BAD_JOB
    return run_reported(lambda job, beat: run_script(job, beat, argv), failed="your script failed")


def run_script(job: Job, beat: HeartbeatWriter, argv: list[str]) -> int:
    """run(), with the script's own sys.exit (or the checkpoint stop) as its exit code."""
    try:
        return run(job, beat, argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code:
            beat(TrainerPhase.FAILED, beat.last_step(), error=f"the script exited {e.code}", exit_code=code)
        return code


if __name__ == "__main__":
    sys.exit(main())
