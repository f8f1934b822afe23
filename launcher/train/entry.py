"""The trainer's entry point, `python -m launcher.train [--preflight[=WHY]]`: load the job, say what runs,
record versions.json, then train (launcher.train.training) or run the preflight (launcher.train.preflight),
and turn the outcome into an exit code (launcher.train.errors).

The job folder comes from LAUNCHER_JOB_DIR only, the device from LAUNCHER_DEVICE (launcher.train.job).
Whether to run the preflight is the trainer step's decision: it passes --preflight (WHY: why, recorded in
preflight.json; "--preflight" when given bare). Written by global rank 0 into the attempt folder:
heartbeat.json, metrics.jsonl (launcher.train.metrics), versions.json, preflight.json, checkpoint.done.
"""

from __future__ import annotations

import argparse
from typing import Optional

from launcher import faulthandlers
from launcher.jobfolder import progress
from launcher.jobfolder.names import SERVER_READY, VERSIONS
from launcher.jobfolder.progress import TrainerPhase
from launcher.train.errors import EXIT_OK
from launcher.train.job import Job
from launcher.train.outcome import run_reported
from launcher.train.report import HeartbeatWriter, say
from launcher.train.versions import collect_versions

BARE_PREFLIGHT = "--preflight"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launcher.train",
                                     description="The GRPO trainer of a launcher job (LAUNCHER_JOB_DIR).")
    parser.add_argument("--preflight", nargs="?", const=BARE_PREFLIGHT, default=None, metavar="WHY",
                        help="check the server, generate and score a few prompts; no training")
    return parser.parse_args(argv)


def describe(job: Job, preflight: Optional[str]) -> str:
    """The first line of the trainer's log: what runs, where, against which server."""
    if not job.grpo.get("use_vllm"):
        server = "none (trainer.use_vllm=false)"
    elif job.server_mode or preflight:
        server = job.server_url or f"from the supervisor once healthy ({SERVER_READY})"
    else:
        server = f"none ({job.grpo.get('vllm_mode')} mode: vLLM inside the trainer)"
    what = f"PREFLIGHT ({preflight})" if preflight else "TRAIN"
    return (f"job {job.plan.name}: {what} | server {server} | processes {job.world_size} on {job.trainer_nodes} "
            f"node(s), {'CPU' if job.use_cpu else 'CUDA'} | output_dir {job.output_dir} | attempt {job.attempt_dir}")


def run(job: Job, beat: HeartbeatWriter, preflight: Optional[str]) -> int:
    if job.is_main:
        job.attempt_dir.mkdir(parents=True, exist_ok=True)
    beat(TrainerPhase.START)
    if job.is_main:
        say(describe(job, preflight))
        progress.write_json_atomic(job.attempt_dir / VERSIONS, collect_versions(job.device))
    if preflight:
        if not job.is_main:
            return EXIT_OK  # the preflight runs on global rank 0 only
        from launcher.train.preflight import run_preflight

        return run_preflight(job, beat, preflight)
    from launcher.train.training import run_training

    return run_training(job, beat)


def main(argv: Optional[list[str]] = None) -> int:
    faulthandlers.install("trainer")  # every rank: accelerate launch starts this entry point in each
    ns = parse_args(argv)
    return run_reported(lambda job, beat: run(job, beat, ns.preflight))
