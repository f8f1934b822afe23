"""The sweep in this process: `python -m launcher -m key=a,b ...` submits one job per valid point and returns
once all are queued.

Hydra hands every point to the launcher plugin (hydra_plugins/launcher_sweep) up front; the plugin calls
`run_sweep`, which:

1. refuses a sweep folder that already holds a sweep (unless resuming) and one another process is
   running (a lock held until this process ends);
2. works out each point's config (launcher.sweep.points: Hydra composes only where a config group
   changes), so a point that cannot compose fails the sweep before anything is submitted;
3. lists every point as `pending` in the manifest (reconciling points a hard kill left `submitting`);
4. launches the points in turn through `launch(cfg, events=PointEvents(...))`: each records itself in
   the manifest's journal as it goes (launcher.sweep.journal; folded into manifest.jsonl at the end). While a point is submitted, SIGINT / SIGTERM / SIGHUP are blocked (sbatch
   inherits the mask, so a terminal's Ctrl-C cannot kill it halfway); a signal then stops the sweep
   after that point, as does an sbatch failure;
5. reads every job's state at once (one squeue call, sacct only for what it no longer lists) and prints
   the end table; the exit status says how it went.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from launcher.jobfolder.jsonio import read_json, write_json_atomic
from launcher.sweep.events import EXIT_SUBMIT_FAILED, PointEvents, say
from launcher.sweep.manifest import (DRY_RUN, ERROR, LOCAL, PENDING, REJECTED, RUN_LOCK_FILE, SUBMITTED, SUBMITTING,
                                     SWEEP_FILE, Manifest, now_iso)
from launcher.sweep.resume import EXIT_BAD_OPTION, NO, reconcile_submitting, resume_mode_of
from launcher.sweep.table import print_end_table, refresh_states

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_SOME_REJECTED = 2  # as a single launch with an invalid config
EXIT_POINT_ERROR = 1


def _value(value: Any) -> Any:
    return getattr(value, "value", value)  # an Enum member (the typed config) -> its value


class SweepRun:
    """The sweep this process runs: its folder, manifest, counters, signals, and what is read once per sweep."""

    def __init__(self, sweep_dir: Path, mode: str):
        self.dir = sweep_dir
        self.mode = mode  # "no" | "missing" | "marked"
        self.manifest = Manifest(sweep_dir)
        self.stop_reason: Optional[str] = None
        self.exit_code = 0
        self.signal_name: Optional[str] = None
        self.previous_handlers: dict[int, Any] = {}
        self.submitted = 0  # points submitted by this run
        self.rejected = 0  # points found invalid by this run
        self.errors = 0  # points whose launch raised
        self._facts: dict[str, Any] = {}
        self._git: Optional[tuple[str, str]] = None
        self._git_thread: Any = None  # start_git_snapshot's
        self.owner = None  # the open .sweep.lock
        self.started = False  # sweep.json and multirun.yaml written (a sweeper may send several batches)

    # ----------------------------------------------------------------------------- once per sweep

    def facts(self, cfg):
        """What the cluster (sinfo) and the job's Python say, read once for all the points that agree on what
        facts are read from: the cluster section, the reward functions and the trainer's environment. A sweep
        over other keys reads them once; one over cluster.partition, once per partition."""
        from launcher.validate.facts import gather_facts

        key = repr((cfg.cluster, cfg.reward, cfg.trainer.env))
        if key not in self._facts:
            self._facts[key] = gather_facts(cfg)
        return self._facts[key]

    def start_git_snapshot(self) -> None:
        """Ask git now, in a thread (its calls are mostly waiting), while the points are worked out."""
        import threading

        if self._git is not None or self._git_thread is not None:
            return

        def ask() -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)  # they stay the main thread's
            try:
                self._git = self.git_snapshot_now()
            except Exception:  # noqa: BLE001 - asked again, in the open, by git_snapshot()
                pass

        self._git_thread = threading.Thread(target=ask, name="git-snapshot", daemon=True)
        self._git_thread.start()

    def git_snapshot_now(self) -> tuple[str, str]:
        from launcher.jobfolder.layout import git_snapshot

        return git_snapshot(".")

    def git_snapshot(self) -> tuple[str, str]:
        if self._git_thread is not None:
            self._git_thread.join()
            self._git_thread = None
        if self._git is None:
            self._git = self.git_snapshot_now()
        return self._git

    # ----------------------------------------------------------------------------- start

    def open(self) -> None:
        """Refuse a folder that holds a sweep (unless resuming) or that another process is running."""
        if self.mode == NO and self.manifest.read():
            say(f"{self.dir} already holds a sweep (manifest.jsonl); resume it with "
                f"`python -m launcher.jobs resume {self.dir}`, or choose another hydra.sweep.dir")
            sys.exit(EXIT_SOME_REJECTED)
        self.dir.mkdir(parents=True, exist_ok=True)
        owner = open(self.dir / RUN_LOCK_FILE, "a")  # held until this process ends
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            say(f"another process is submitting this sweep ({self.dir}); wait for it to end")
            sys.exit(EXIT_SOME_REJECTED)
        self.owner = owner

    def record_start(self, config, points: list[tuple[int, list[str]]]) -> None:
        """sweep.json gets this command line (once); the manifest lists every point; multirun.yaml is Hydra's config."""
        if not self.started:
            self.started = True
            OmegaConf.save(config, self.dir / "multirun.yaml")
            record = read_json(self.dir / SWEEP_FILE) or {"runs": []}
            record["runs"].append({"argv": sys.argv[1:], "cwd": os.getcwd(), "python": sys.executable,
                                   "started_at": now_iso(), "mode": self.mode})
            record["sweep_dir"] = str(self.dir)
            write_json_atomic(self.dir / SWEEP_FILE, record)
        with self.manifest.edit() as rows:
            for index, overrides in points:
                self.manifest.upsert(rows, index, overrides)
            for row in rows:
                if row.get("status") == SUBMITTING:
                    reconcile_submitting(row)

    # ----------------------------------------------------------------------------- signals

    def catch_signals(self) -> None:
        for sig in DEFERRED_SIGNALS:
            self.previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signals(self) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, DEFERRED_SIGNALS)
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.previous_handlers = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            self.stop(f"interrupted by {self.signal_name}", 128 + signum)
            say(f"{self.signal_name}: stopping the sweep after the point being submitted")

    @contextlib.contextmanager
    def submission(self, local: bool):
        """Around one point. Submitting, the signals wait until the point is recorded. A local point runs
        for minutes in this process: it gets the signals as a single launch does."""
        if local:
            caught = bool(self.previous_handlers)
            self.restore_signals()
            try:
                yield
            finally:
                if caught:
                    self.catch_signals()
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)
        try:
            yield
        finally:
            pending = signal.sigpending() & set(DEFERRED_SIGNALS)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, DEFERRED_SIGNALS)  # runs _on_signal for what was pending
            if pending and self.signal_name is None:
                self._on_signal(min(pending), None)

    # ----------------------------------------------------------------------------- points

    def stop(self, reason: str, exit_code: int) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.exit_code = reason, exit_code

    def launch_point(self, index: int, overrides: list[str], cfg, typed=None) -> int:
        """Launch one point through launch(); what it did is in the manifest; its exit code. `typed`: the
        point's LaunchConfig when the sweep typed it already (launcher.sweep.typed), else launch() types cfg."""
        from launcher.launch import launch

        events = PointEvents(self, index, overrides)
        local = _value(OmegaConf.select(cfg, "cluster.backend")) == "local" and not cfg.get("dry_run")
        code, error = 0, None
        with self.submission(local):
            try:
                code = launch(typed if typed is not None else cfg, events=events)
            except KeyboardInterrupt:  # a local point stopped by Ctrl-C
                code = 130
            except Exception as exc:  # recorded; the other points still go in
                code, error = EXIT_POINT_ERROR, exc
                self.errors += 1
                say(f"point #{index} failed in the launcher:\n{traceback.format_exc().rstrip()}")
        self._finish_point(events, cfg, code, error, local)
        if local and code == 130:
            self.stop("interrupted by SIGINT", 130)
        return code

    def _finish_point(self, events: PointEvents, cfg, code: int, error: Optional[Exception], local: bool) -> None:
        """A point that ended without an event saying what happened: an error, a dry run, a local run."""
        point = events.point()
        if point is not None and point.get("status") not in (PENDING, SUBMITTING):
            return
        if error is None and not cfg.get("dry_run") and not local:
            return  # skipped (resume=marked) or stopped before it was submitted
        with events.edit() as row:
            if error is not None:
                row.update(status=ERROR, reason=f"{type(error).__name__}: {error}")
            elif cfg.get("dry_run"):
                row.update(status=DRY_RUN, reason=None)
            else:
                row.update(status=LOCAL, reason=f"ran on this machine, exit code {code}")

    def stop_if_asked(self) -> None:
        if self.stop_reason is None:
            return
        self.restore_signals()
        self.manifest.compact()
        points = self.manifest.read()
        try:
            print_end_table(self.dir, points)
        except OSError:
            pass
        missing = [p for p in points if p.get("status") not in (SUBMITTED, REJECTED)]
        say(f"sweep stopped: {self.stop_reason}")
        say(f"{sum(1 for p in points if p.get('status') == SUBMITTED)} of {len(points)} points went in; "
            f"{len(missing)} still to submit. Resume with: python -m launcher.jobs resume {self.dir}")
        sys.exit(self.exit_code or EXIT_SUBMIT_FAILED)

    def end(self) -> int:
        """Every point done: states read once, the table; the exit status."""
        self.restore_signals()
        points = refresh_states(self.dir, self.manifest, just_queued=True)  # folds the journal in when it writes states
        self.manifest.compact()  # when it did not (no job went in)
        print_end_table(self.dir, points)
        if self.errors:
            return EXIT_POINT_ERROR
        return EXIT_SOME_REJECTED if self.rejected else 0


def open_sweep(config) -> SweepRun:
    """The sweep of this Hydra config, refused (exit 2) when its folder holds one already or is being run."""
    try:
        mode = resume_mode_of(config)
    except ValueError as error:
        say(str(error))
        sys.exit(EXIT_BAD_OPTION)
    run = SweepRun(Path(str(config.hydra.sweep.dir)).absolute(), mode)
    run.open()
    return run


def run_sweep(hydra_context, config, job_overrides, initial_job_idx: int = 0, run: Optional[SweepRun] = None) -> list:
    """Queue every point of `job_overrides` (one batch of Hydra's launcher API; `run`: the sweep an earlier
    batch opened). Returns one JobReturn per point, or exits with the sweep's status when it is not 0."""
    from hydra.core.utils import JobReturn, JobStatus

    from launcher.sweep.points import PointConfigs
    from launcher.sweep.typed import TypedPoints

    run = run or open_sweep(config)
    if _value(OmegaConf.select(config, "cluster.backend")) == "slurm" and not OmegaConf.select(config, "dry_run"):
        run.start_git_snapshot()  # its submissions record it
    points = [[str(o) for o in overrides] for overrides in job_overrides]
    configs = PointConfigs(hydra_context.config_loader, config, points, first_index=initial_job_idx)
    typing = TypedPoints()
    indexed = [(initial_job_idx + i, overrides) for i, overrides in enumerate(points)]
    run.record_start(config, indexed)
    plural = "s" if len(points) != 1 else ""
    say(f"sweep of {len(points)} point{plural}{' (resume)' if run.mode != NO else ''}; sweep folder {run.dir}", sys.stdout)
    returns = []
    run.catch_signals()
    try:
        for i, (index, overrides) in enumerate(indexed):
            run.stop_if_asked()
            cfg = configs.get(i)
            code = run.launch_point(index, overrides, cfg, typing.typed(configs.group(i), configs.values(i), cfg))
            returns.append(JobReturn(overrides=overrides, working_dir=os.getcwd(), status=JobStatus.COMPLETED,
                                     _return_value=code))
        run.stop_if_asked()
    finally:
        run.restore_signals()
    code = run.end()
    if code:
        sys.exit(code)
    return returns
