"""The jobs CLI: `python -m launcher.jobs COMMAND TARGET` (also installed as `launcher-jobs`).

TARGET is a sweep folder (it holds manifest.jsonl), a job folder, or a Slurm job id.

  status   TARGET [--point N ...] [--json]          state of every job (het components aggregated) in ONE
                                                    sacct call; the reason from the supervisor log when failed
  logs     TARGET [--point N] [-c COMPONENT] [--attempt N] [-n LINES] [-f]
                                                    a component's log: trainer (default), server, supervisor,
                                                    batch (the batch step's slurm-*.out); -f follows it
  cancel   TARGET [--point N ...]                   scancel one job, chosen points, or every live job of a sweep
  resubmit TARGET [--point N ...]                   new jobs for failed or cancelled points (or the chosen
                                                    ones), with their original overrides
  resume   SWEEP                                    submit what an interrupted sweep did not (same command,
                                                    hydra.callbacks.sweep.resume=true)
  report   SWEEP [--by METRIC] [--out DIR]          CSV + PNG comparing the points, and the best one

Tables use rich on a terminal and plain aligned text (no ANSI codes) when piped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

from launcher.cli.job_state import category, failure_reason, state_text
from launcher.cli.logs import cmd_logs
from launcher.cli.targets import EXIT_USAGE, Target, UsageError, resolve
from launcher.show.tables import print_table
from launcher.jobfolder import names
from launcher.jobfolder.jsonio import read_json
from launcher.slurm.states import FAILED_STATES, FINISHED_STATES, query_states, state_of
from launcher.sweep.manifest import (REJECTED, SUBMIT_FAILED, SWEEP_FILE, Manifest,
                                     record_states)
from launcher.sweep.table import point_label, varying



# ----------------------------------------------------------------------------- commands


def cmd_status(target: Target, args) -> int:
    from launcher.show.watch import describe

    info = query_states(target.jobs) if target.jobs else {}  # ONE sacct call for the whole sweep
    states = {job: state_of(info.get(job)) for job in target.jobs}
    if target.sweep_dir is not None:
        record_states(target.sweep_dir, {j: s for j, s in states.items() if s != "UNKNOWN"})
    common, _ = varying(Manifest(target.sweep_dir).read() if target.sweep_dir else target.points)
    rows, records, counts = [], [], {}
    for p in target.points:
        job_id = p.get("job_id")
        state = states.get(job_id, "UNKNOWN") if job_id else ""
        what = category(p, state)
        counts[what] = counts.get(what, 0) + 1
        if p.get("status") == REJECTED:
            detail = p.get("reason") or ""
        elif not job_id:
            detail = p.get("status", "") + (f": {p['reason']}" if p.get("reason") else "")
        elif state in FINISHED_STATES:
            detail = failure_reason(p.get("job_dir")) if state != "COMPLETED" else _completed_detail(p)
        elif p.get("job_dir"):
            detail = describe(Path(p["job_dir"]), state)
        else:
            detail = ""
        shown_state = state_text(info.get(job_id), p.get("job_dir")) if job_id else what
        label = point_label(p, common) if target.sweep_dir else " ".join(p.get("overrides", [])) or "-"
        rows.append([str(p["index"]), label, job_id or "-", shown_state, p.get("job_dir") or "-", detail])
        records.append({"index": p["index"], "overrides": p.get("overrides"), "job_id": job_id, "state": state,
                        "category": what, "detail": detail, "job_dir": p.get("job_dir")})
    if args.json:
        for record in records:
            print(json.dumps(record))
        return 0
    order = ["pending", "running", "completed", "failed", "cancelled", "rejected", "not submitted", "unknown"]
    summary = ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))
    title = f"{target.sweep_dir or 'job'}: {summary}"
    print_table(["#", "point", "job", "state", "job folder", "detail"], rows, title=title)
    return 0


def _completed_detail(point: dict) -> str:
    from launcher.cli.report import summarize_job

    row = summarize_job(Path(point["job_dir"])) if point.get("job_dir") else {}
    bits = []
    if row.get("tokens_per_s") is not None:
        bits.append(f"{row['tokens_per_s']:.1f} tokens/s")
    if row.get("reward") is not None:
        bits.append(f"reward {row['reward']:.3f}")
    if row.get("server_startup_s") is not None:
        bits.append(f"server up in {row['server_startup_s']:.0f} s")
    return ", ".join(bits) or "COMPLETED"


def cmd_cancel(target: Target, args) -> int:
    info = query_states(target.jobs) if target.jobs else {}
    live = [j for j in target.jobs if state_of(info.get(j)) not in FINISHED_STATES]
    if not live:
        print("launcher: nothing to cancel (no job of the selection is pending or running)")
        return 0
    out = subprocess.run(["scancel", *live], capture_output=True, text=True, timeout=60)  # one call for all
    if out.returncode != 0:
        print(f"launcher: scancel failed: {out.stderr.strip()}", file=sys.stderr)
        return 1
    if target.sweep_dir is not None:
        record_states(target.sweep_dir, {j: "CANCELLED (requested)" for j in live})
    print(f"launcher: cancelled {len(live)} job(s): {' '.join(live)}")
    return 0


def sweep_command(sweep_dir: Path, mode: str) -> tuple[list[str], str]:
    """The command that (re)runs the sweep in its folder; (argv, cwd)."""
    record = read_json(sweep_dir / SWEEP_FILE)
    if not isinstance(record, dict) or not record.get("runs"):
        raise UsageError(f"{sweep_dir}: no {SWEEP_FILE}, so the sweep's command line is not known")
    first = record["runs"][0]
    keep = [a for a in first["argv"] if a not in ("-m", "--multirun")
            and not a.startswith(("hydra.sweep.dir=", "hydra.callbacks.sweep."))]
    argv = [sys.executable, "-m", "launcher", "-m", *keep, f"hydra.sweep.dir={sweep_dir}",
            f"hydra.callbacks.sweep.resume={mode}"]
    return argv, first.get("cwd") or os.getcwd()


def rerun_sweep(sweep_dir: Path, mode: str) -> int:
    argv, cwd = sweep_command(sweep_dir, mode)
    print(f"launcher: running (in {cwd}): {shlex.join(argv[2:])}", flush=True)
    return subprocess.run(argv, cwd=cwd).returncode


def cmd_resume(target: Target, args) -> int:
    if target.sweep_dir is None:
        raise UsageError("resume needs a sweep folder")
    return rerun_sweep(target.sweep_dir, "true")


def cmd_resubmit(target: Target, args) -> int:
    info = query_states(target.jobs) if target.jobs else {}
    if args.point:
        chosen = target.points
        running = [p for p in chosen if p.get("job_id") and state_of(info.get(p["job_id"])) not in FINISHED_STATES]
        if running:
            raise UsageError(f"point(s) {', '.join(str(p['index']) for p in running)} still have a live job: "
                             "cancel it first")
    else:
        chosen = [p for p in target.points if (p.get("job_id") and state_of(info.get(p["job_id"])) in FAILED_STATES)
                  or p.get("status") == SUBMIT_FAILED]
    if not chosen:
        print("launcher: nothing to resubmit (no failed or cancelled point)")
        return 0
    if target.sweep_dir is None:
        return _resubmit_lone_job(chosen[0])
    keys = {p["index"] for p in chosen}
    with Manifest(target.sweep_dir).edit() as points:
        for p in points:
            if p["index"] in keys:
                p["resubmit"] = True
    print(f"launcher: resubmitting point(s) {', '.join(f'#{i}' for i in sorted(keys))} with their overrides")
    return rerun_sweep(target.sweep_dir, "marked")


def _resubmit_lone_job(point: dict) -> int:
    job_dir = Path(point["job_dir"]) if point.get("job_dir") else None
    submission = read_json(job_dir / names.SUBMISSION) if job_dir else None
    if not isinstance(submission, dict) or not submission.get("argv"):
        raise UsageError("the job's command line is not known (no submission.json in its folder)")
    overrides = [a for a in submission["argv"][1:] if a not in ("-m", "--multirun")]
    argv = [sys.executable, "-m", "launcher", *overrides]
    cwd = submission.get("cwd") or os.getcwd()
    print(f"launcher: running (in {cwd}): {shlex.join(argv[2:])}", flush=True)
    return subprocess.run(argv, cwd=cwd).returncode


def cmd_report(target: Target, args) -> int:
    from launcher.cli.report import run_report

    if target.sweep_dir is None:
        raise UsageError("report needs a sweep folder")
    return run_report(target.sweep_dir, out_dir=Path(args.out) if args.out else None, by=args.by)


# ----------------------------------------------------------------------------- entry point


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m launcher.jobs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, points: str = "many") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("target", help="sweep folder, job folder, or job id")
        if points:
            p.add_argument("--point", "-p", type=int, action="append",
                           help="the point's # (from the sweep table); repeat for several" if points == "many"
                           else "the point's # (from the sweep table)")
        p.add_argument("--root", help="job_root searched for a job id (default: $LAUNCHER_JOB_ROOT or ./jobs)")
        return p

    st = command("status", "state of every job: pending, running, completed, failed (with the reason)")
    st.add_argument("--json", action="store_true", help="one JSON object per point instead of a table")
    lg = command("logs", "a component's log of one job", points="one")
    lg.add_argument("--component", "-c", choices=["trainer", "server", "supervisor", "batch"], default="trainer",
                    help="whose log (default: trainer); batch = the batch step's slurm-<id>.out")
    lg.add_argument("--attempt", type=int, help="attempt number (default: the latest)")
    lg.add_argument("--lines", "-n", type=int, default=50, help="last N lines (0: the whole log)")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing as it grows, until the job ends")
    command("cancel", "cancel one job, chosen points, or every pending or running job of a sweep")
    command("resubmit", "new jobs for failed or cancelled points (or the chosen ones), with their original overrides")
    command("resume", "submit the points an interrupted sweep did not submit", points="")
    rp = command("report", "CSV and PNG comparing the points of a sweep; prints the best point", points="")
    rp.add_argument("--by", default="tokens_per_s", choices=["tokens_per_s", "reward", "step_time_s"],
                    help="what makes a point the best (default: tokens_per_s)")
    rp.add_argument("--out", help="folder for report.csv and report.png (default: the sweep folder)")
    return ap


COMMANDS = {"status": cmd_status, "logs": cmd_logs, "cancel": cmd_cancel, "resubmit": cmd_resubmit,
            "resume": cmd_resume, "report": cmd_report}


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        target = resolve(args.target, Path(args.root) if args.root else None, getattr(args, "point", None))
        return COMMANDS[args.command](target, args)
    except UsageError as error:
        print(f"launcher.jobs: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
