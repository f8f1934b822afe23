"""One launch: plan, then dry-run, or (offline) stage the hub model and dataset and submit (Slurm) or run
(local). Sweep points come through here too."""

from __future__ import annotations

import sys
from typing import Optional

from launcher.config.compose import as_launch_config
from launcher.config.schema import LaunchConfig
from launcher.plan.build import build_plan
from launcher.plan.plan import Plan
from launcher.validate.facts import gather_facts
from launcher.validate.problems import EXIT_INVALID_CONFIG, InvalidConfig


def report_invalid(error: InvalidConfig) -> None:
    print("launcher: invalid configuration, nothing was submitted:", file=sys.stderr)
    for problem in error.problems:
        print(f"  - {problem}", file=sys.stderr)


def dry_run(plan: Plan, cfg: LaunchConfig) -> None:
    print(plan)
    if plan.offline:
        from launcher.plan.hub_repos import status_lines

        for line in status_lines(plan):
            print(f"  offline: {line}")
    print()
    if plan.backend == "slurm":
        from launcher.plan.sbatch import supervisor_command
        from launcher.plan.sbatch import render_sbatch

        print("# sbatch script (job folder and submitit folder are filled in at submission):")
        print(render_sbatch(plan, "<job folder>", supervisor_command(plan, "<job folder>/submitit")), end="")
    else:
        print("# local processes:")
        for c in plan.components:
            print(f"CUDA_VISIBLE_DEVICES={','.join(map(str, c.gpus or []))} {' '.join(c.execs)}")


def launch(composed, events=None) -> int:
    """Launch one composed config (a DictConfig from Hydra, a LaunchConfig, or an older plain dict).

    `events`: a sweep's point (launcher.sweep.events.PointEvents). It is told what happened instead of
    this exiting with the code, and it supplies the facts read once per sweep."""
    if events is not None and events.skip():  # a resumed sweep does not submit a point that already went in
        return 0
    cfg: Optional[LaunchConfig] = None
    try:
        cfg = as_launch_config(composed)
        facts = gather_facts(cfg) if events is None else events.facts(cfg)
        plan = build_plan(cfg, facts, python=sys.executable)
        if plan.offline and not cfg.dry_run:
            from launcher.backends.staging import stage  # downloads, when the cache lacks a repo

            if stage(plan):  # a model just staged: the checks that read its config.json run now
                plan = build_plan(cfg, facts, python=sys.executable)
    except InvalidConfig as error:
        if events is not None:  # recorded; the sweep lists every invalid point with its reasons at the end
            events.on_rejected(cfg, error)
            return EXIT_INVALID_CONFIG
        report_invalid(error)
        sys.exit(EXIT_INVALID_CONFIG)
    for warning in plan.warnings:
        print(f"launcher: warning: {warning}", file=sys.stderr)
    if cfg.dry_run:
        dry_run(plan, cfg)
        return 0
    if plan.backend == "slurm":
        from launcher.backends.slurm import submit_launch

        code = submit_launch(plan, cfg, events)
        if code and events is None:
            sys.exit(code)  # Hydra drops the return value: a failed sbatch must not exit 0
        return code
    from launcher.backends.local import run_local

    code = run_local(plan, cfg)
    if code and events is None:
        sys.exit(code)
    return code
