"""Sweeps: `python -m launcher -m key=a,b ...` submits one job per valid point and returns once all are queued.

Hydra's BasicLauncher runs `launch` once per point, in this process; on Slurm `launch` submits and
returns, so the sweep ends when every valid point is queued. This module keeps the sweep's record
and prints its table. It hooks in at two places:

- `SweepCallback` (conf/config.yaml, `hydra.callbacks.sweep`): lists every point as `pending`
  before the first submission, defers Ctrl-C / SIGTERM / SIGHUP until the point being submitted is
  recorded, stops the sweep on an sbatch failure, and prints the end-of-sweep table.
- the record_* functions, called by launch.py and slurm.py for each point.

The sweep folder (`hydra.sweep.dir`, default `<job_root>/sweeps/<YYYYmmdd-HHMMSS>`) holds:

  sweep.json      each command line that ran this sweep (argv, cwd, time, mode): `jobs resume` reruns it
  manifest.jsonl  one JSON object per point, rewritten atomically (temp file + rename) on every change,
                  so a reader or an interruption never sees half a file. Keys of a point:
                    index         Hydra's job number (the `#` of the tables)
                    overrides     the point's override list (Hydra's hydra.overrides.task): its identity
                    status        pending | submitting | submitted | rejected | submit_failed | dry_run | error
                                  | local (cluster=local: the point ran here, in turn)
                    reason        why rejected / why sbatch failed (null otherwise)
                    job_id, job_dir, submitted_at   the job that went in (job_dir is set as `submitting`,
                                  before sbatch runs, so an interrupted sbatch can be traced to its folder)
                    state, state_at   the scheduler state when last read (sweep end, `jobs status`)
                    history       earlier jobs of this point (after `jobs resubmit`), oldest first
                    resubmit      true while `jobs resubmit` has asked for a new job
  multirun.yaml   Hydra's own copy of the sweep config

Each job folder of the sweep also gets `sweep_point.json` (sweep folder, index, overrides), so a job
folder or job id leads back to its sweep.

Resume: rerun the same command with `hydra.sweep.dir=<sweep folder> hydra.callbacks.sweep.resume=true`
(`python -m launcher.jobs resume <sweep folder>` does exactly that). Points that already went in
(submitted, with a job id) are skipped; the others (pending, rejected, submit_failed, and a
`submitting` point whose job cannot be found) are validated and submitted. `resume=marked` submits
only the points `jobs resubmit` marked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from hydra.experimental.callback import Callback

from launcher.jobfolder.progress import read_json, write_json_atomic

MANIFEST = "manifest.jsonl"
SWEEP_FILE = "sweep.json"
POINT_FILE = "sweep_point.json"
LOCK_FILE = ".manifest.lock"  # held while the manifest is read, changed and written back
RUN_LOCK_FILE = ".sweep.lock"  # held by the process running (or resuming) the sweep

PENDING, SUBMITTING, SUBMITTED = "pending", "submitting", "submitted"
REJECTED, SUBMIT_FAILED, DRY_RUN, ERROR, LOCAL = "rejected", "submit_failed", "dry_run", "error", "local"
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_SUBMIT_FAILED = 1
EXIT_SOME_REJECTED = 2  # as a single launch with an invalid config


def now_iso() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def point_key(overrides: list[str]) -> tuple[str, ...]:
    """A point's identity: its overrides, order aside."""
    return tuple(sorted(str(o) for o in overrides))


# ----------------------------------------------------------------------------- the manifest


class Manifest:
    """manifest.jsonl of one sweep folder: read it, or edit it under a lock and rewrite it atomically."""

    def __init__(self, sweep_dir: str | os.PathLike):
        self.dir = Path(sweep_dir)
        self.path = self.dir / MANIFEST

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> list[dict]:
        points = []
        try:
            text = self.path.read_text()
        except OSError:
            return []
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "overrides" in row:
                points.append(row)
        return sorted(points, key=lambda p: p.get("index", 0))

    @contextlib.contextmanager
    def edit(self) -> Iterator[list[dict]]:
        """The points, to change in place; written back when the block ends without an error."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                points = self.read()
                yield points
                self._write(points)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, points: list[dict]) -> None:
        tmp = self.path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            for point in sorted(points, key=lambda p: p.get("index", 0)):
                f.write(json.dumps(point, sort_keys=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def find(points: list[dict], overrides: list[str]) -> Optional[dict]:
    key = point_key(overrides)
    return next((p for p in points if point_key(p["overrides"]) == key), None)


def new_point(index: int, overrides: list[str]) -> dict:
    return {"index": index, "overrides": list(overrides), "status": PENDING, "reason": None, "job_id": None,
            "job_dir": None, "submitted_at": None, "state": None, "state_at": None, "history": []}


def upsert(points: list[dict], index: int, overrides: list[str]) -> dict:
    point = find(points, overrides)
    if point is None:
        point = new_point(index, overrides)
        points.append(point)
    return point


def retire_job(point: dict) -> None:
    """Move the point's current job (if any) into its history, before a new one goes in."""
    if point.get("job_id"):
        point.setdefault("history", []).append({k: point.get(k) for k in
                                                ("job_id", "job_dir", "submitted_at", "state", "state_at")})
    point.update(job_id=None, job_dir=None, submitted_at=None, state=None, state_at=None, reason=None)


def sweep_of_job(job_dir: str | os.PathLike) -> Optional[dict]:
    """{"sweep_dir", "index", "overrides"} when the job folder belongs to a sweep."""
    info = read_json(Path(job_dir) / POINT_FILE)
    return info if isinstance(info, dict) else None


def record_states(sweep_dir: str | os.PathLike, states: dict[str, str]) -> None:
    """Write scheduler states ({job id: state}) read now into the manifest ("status when last read")."""
    if not states:
        return
    stamp = now_iso()
    with Manifest(sweep_dir).edit() as points:
        for point in points:
            if point.get("job_id") in states:
                point["state"], point["state_at"] = states[point["job_id"]], stamp


# ----------------------------------------------------------------------------- the sweep in this process


class SweepRun:
    """The sweep this process is running (set by the callback; the hooks work without it too)."""

    def __init__(self, sweep_dir: Path, resume: str):
        self.dir = sweep_dir
        self.resume = resume  # "no" | "missing" | "marked"
        self.stop_reason: Optional[str] = None
        self.exit_code = 0
        self.signal_name: Optional[str] = None
        self.previous_handlers: dict[int, Any] = {}
        self.started = time.monotonic()
        self.submitted = 0  # points submitted by this run
        self.rejected = 0  # points found invalid by this run
        self.compose_once: Optional[ComposeOnce] = None
        self.owner = None  # the open .sweep.lock


_RUN: Optional[SweepRun] = None


def _hydra():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get()


def current_point() -> tuple[Path, int, list[str]]:
    """(sweep folder, index, overrides) of the point Hydra is running now."""
    hc = _hydra()
    sweep_dir = _RUN.dir if _RUN is not None else Path(str(hc.sweep.dir)).absolute()
    return sweep_dir, int(hc.job.num), [str(o) for o in hc.overrides.task]


def _edit_current():
    sweep_dir, index, overrides = current_point()
    manifest = Manifest(sweep_dir)

    @contextlib.contextmanager
    def block():
        with manifest.edit() as points:
            yield upsert(points, index, overrides)

    return block()


def skip_point() -> bool:
    """Called by launch() first: on resume, True for a point that is not to be submitted again."""
    if _RUN is None or _RUN.resume == "no":
        return False
    sweep_dir, index, overrides = current_point()
    point = find(Manifest(sweep_dir).read(), overrides)
    if point is None:
        return _RUN.resume == "marked"
    if point.get("resubmit"):
        return False
    if _RUN.resume == "marked":
        return True
    if point.get("job_id") and point.get("status") == SUBMITTED:
        say(f"point #{point['index']} already went in as job {point['job_id']}; not submitted again")
        return True
    return False


def record_rejection(cfg: dict, error) -> None:
    """An invalid point: recorded with its reasons, nothing submitted."""
    problems = [{"keys": list(p.keys), "message": p.message} for p in getattr(error, "problems", [])]
    reason = "; ".join(p["message"] for p in problems) or str(error)
    with _edit_current() as point:
        if point.get("job_id"):
            retire_job(point)
        point.update(status=REJECTED, reason=reason, problems=problems, resubmit=False)
        index = point["index"]
    if _RUN is not None:
        _RUN.rejected += 1
    say(f"point #{index} is invalid, not submitted: {shorten(reason, 100)}")


def record_submitting(cfg: dict, plan) -> Path:
    """Before sbatch: the point's job folder is created and recorded, so an interrupted sbatch leaves a trace."""
    from launcher.jobfolder.layout import create_job_dir

    job_dir = create_job_dir(cfg["cluster"]["job_root"], plan.name)
    sweep_dir, index, overrides = current_point()
    write_json_atomic(job_dir / POINT_FILE, {"sweep_dir": str(sweep_dir), "index": index, "overrides": overrides})
    with _edit_current() as point:
        retire_job(point)
        point.update(status=SUBMITTING, job_dir=str(job_dir), submitting_at=now_iso())
    return job_dir


def record_submission(cfg: dict, job_id: str, job_dir) -> None:
    """After sbatch: the job id that went in."""
    with _edit_current() as point:
        if point.get("job_id") and point.get("job_id") != str(job_id):
            retire_job(point)
        point.update(status=SUBMITTED, job_id=str(job_id), job_dir=str(job_dir), submitted_at=now_iso(),
                     state="SUBMITTED", state_at=now_iso(), reason=None, resubmit=False)
    if _RUN is not None:
        _RUN.submitted += 1


def record_submit_failure(cfg: dict, error: Exception) -> None:
    """sbatch failed for good (a permanent error, or transient ones past cluster.submit_retries): stop the sweep."""
    with _edit_current() as point:
        point.update(status=SUBMIT_FAILED, reason=str(error), state=None)
        index = point["index"]
    if _RUN is not None:
        _RUN.stop_reason = f"sbatch failed for point #{index}: {error}"
        _RUN.exit_code = EXIT_SUBMIT_FAILED


def submit_interval_s(cfg: dict) -> float:
    """The least time between two sbatch calls of this process (cluster.submit_rate_per_s)."""
    rate = float(cfg["cluster"].get("submit_rate_per_s") or 0)
    return 1.0 / rate if rate > 0 else 0.0


# ----------------------------------------------------------------------------- planning the points


def expand_points(config) -> Optional[list[list[str]]]:
    """Every point's override list, as Hydra's BasicSweeper will make them (None if that cannot be known)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        if "basic_sweeper" not in str(config.hydra.sweeper.get("_target_", "")):
            return None
        params = config.hydra.sweeper.get("params") or {}
        arguments = [f"{k}={v}" for k, v in params.items()]
        arguments += OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        overrides = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(overrides, None)
        return [list(p) for batch in batches for p in batch]
    except Exception:  # e.g. glob() over a config group needs the config loader: only list as they come
        return None


def reconcile_submitting(point: dict) -> None:
    """A point left `submitting` by a hard kill: did its sbatch go in? The job folder or squeue says."""
    job_dir = point.get("job_dir")
    info = read_json(Path(job_dir) / "submission.json") if job_dir else None
    if isinstance(info, dict) and info.get("job_id"):
        point.update(status=SUBMITTED, job_id=str(info["job_id"]), submitted_at=info.get("submitted_at"))
        return
    job_id = find_queued_job(job_dir) if job_dir else None
    if job_id:
        point.update(status=SUBMITTED, job_id=job_id, submitted_at=point.get("submitting_at"))
        return
    point.update(status=PENDING, reason="sbatch was interrupted and no job of this folder is queued")


def find_queued_job(job_dir: str) -> Optional[str]:
    """The queued job whose batch script lies in job_dir (squeue's command column), if any."""
    import subprocess

    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i|%o"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines():
        job_id, _, command = line.partition("|")
        if command.startswith(str(job_dir).rstrip("/") + "/"):
            return job_id.split("+")[0].strip()
    return None


class ComposeOnce:
    """Hydra composes every point twice: the sweeper composes the whole batch first (to fail before
    anything is launched), then the launcher composes each point again. Composition is most of a
    sweep's time on the login node (~85 ms a point), so the launcher gets the sweeper's config back
    instead. Each kept config is handed out once (the sweeper drops its copy); a point that appears
    twice is composed again. Installed on Hydra's config loader for the sweep only."""

    LIMIT = 2048  # configs kept at most (memory); past that, points are composed twice as before

    def __init__(self, loader) -> None:
        self.loader = loader
        self.compose = loader.load_sweep_config
        self.kept: dict[tuple[str, ...], Any] = {}

    def __call__(self, master_config, sweep_overrides):
        key = tuple(str(o) for o in sweep_overrides)
        if key in self.kept:
            return self.kept.pop(key)
        config = self.compose(master_config, sweep_overrides)
        if len(self.kept) < self.LIMIT:
            self.kept[key] = config
        return config

    @classmethod
    def install(cls) -> Optional["ComposeOnce"]:
        try:
            from hydra.core.global_hydra import GlobalHydra

            loader = GlobalHydra.instance().config_loader()
            if isinstance(getattr(loader, "load_sweep_config", None), ComposeOnce):
                return None
            hook = cls(loader)
            loader.load_sweep_config = hook
            return hook
        except Exception:  # another Hydra layout: compose twice, as Hydra does
            return None

    def uninstall(self) -> None:
        if self.loader.__dict__.get("load_sweep_config") is self:
            del self.loader.__dict__["load_sweep_config"]
        self.kept.clear()


# ----------------------------------------------------------------------------- the Hydra callback


def say(message: str, stream=None) -> None:
    try:
        print(f"launcher: {message}", file=stream or sys.stderr, flush=True)
    except OSError:  # the terminal is gone (SIGHUP): the manifest is the record
        pass


def _resume_mode(value: Any) -> str:
    text = str(value).strip().lower()
    if text in ("", "false", "no", "0", "none", "null"):
        return "no"
    if text == "marked":
        return "marked"
    if text in ("true", "yes", "1", "missing"):
        return "missing"
    raise ValueError(f"hydra.callbacks.sweep.resume must be false, true or marked, got {value!r}")


class SweepCallback(Callback):
    """Hydra callback: manifest bookkeeping, signal deferral, and the end-of-sweep table."""

    def __init__(self, resume: Any = False) -> None:
        self.resume = resume

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        global _RUN
        try:
            mode = _resume_mode(self.resume)
        except ValueError as error:
            say(str(error))
            sys.exit(EXIT_SOME_REJECTED)
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        manifest = Manifest(sweep_dir)
        if mode == "no" and manifest.read():
            say(f"{sweep_dir} already holds a sweep (manifest.jsonl); resume it with "
                f"`python -m launcher.jobs resume {sweep_dir}`, or choose another hydra.sweep.dir")
            sys.exit(EXIT_SOME_REJECTED)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        owner = open(sweep_dir / RUN_LOCK_FILE, "a")  # held until this process ends
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            say(f"another process is submitting this sweep ({sweep_dir}); wait for it to end")
            sys.exit(EXIT_SOME_REJECTED)
        _RUN = SweepRun(sweep_dir, mode)
        _RUN.owner = owner
        record = read_json(sweep_dir / SWEEP_FILE) or {"runs": []}
        record["runs"].append({"argv": sys.argv[1:], "cwd": os.getcwd(), "python": sys.executable,
                               "started_at": now_iso(), "mode": mode})
        record["sweep_dir"] = str(sweep_dir)
        write_json_atomic(sweep_dir / SWEEP_FILE, record)
        planned = expand_points(config)
        with manifest.edit() as points:
            for index, overrides in enumerate(planned or []):
                upsert(points, index, overrides)
            for point in points:
                if point.get("status") == SUBMITTING:
                    reconcile_submitting(point)
        what = f"{len(planned)} points" if planned is not None else "points"
        say(f"sweep of {what}{' (resume)' if mode != 'no' else ''}; sweep folder {sweep_dir}", sys.stdout)
        for sig in DEFERRED_SIGNALS:
            _RUN.previous_handlers[sig] = signal.signal(sig, _on_signal)
        _RUN.compose_once = ComposeOnce.install()

    def on_job_start(self, config, **kwargs: Any) -> None:
        if _RUN is None:
            return
        _stop_if_asked()
        # the point is submitted and recorded as one: signals wait (and sbatch, which inherits the mask,
        # is not killed by the terminal's Ctrl-C halfway through a submission)
        signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)

    def on_job_end(self, config, job_return, **kwargs: Any) -> None:
        if _RUN is None:
            return
        pending = signal.sigpending() & set(DEFERRED_SIGNALS)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, DEFERRED_SIGNALS)  # runs _on_signal for what was pending
        if pending and _RUN.signal_name is None:
            _on_signal(min(pending), None)
        _finish_point(config, job_return)
        _stop_if_asked()

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        if _RUN is None:
            return
        _restore_signals()
        points = refresh_states(_RUN.dir)
        print_end_table(_RUN.dir, points)
        if _RUN.rejected:
            sys.exit(EXIT_SOME_REJECTED)


def _on_signal(signum, frame) -> None:
    if _RUN is None:
        return
    name = signal.Signals(signum).name
    if _RUN.signal_name is None:
        _RUN.signal_name = name
        _RUN.stop_reason = f"interrupted by {name}"
        _RUN.exit_code = 128 + signum
        say(f"{name}: stopping the sweep after the point being submitted")


def _restore_signals() -> None:
    if _RUN is None:
        return
    signal.pthread_sigmask(signal.SIG_UNBLOCK, DEFERRED_SIGNALS)
    for sig, handler in _RUN.previous_handlers.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    _RUN.previous_handlers = {}
    if _RUN.compose_once is not None:
        _RUN.compose_once.uninstall()
        _RUN.compose_once = None


def _finish_point(config, job_return) -> None:
    """A point whose task ended without a hook saying what happened (dry run, local backend, an error)."""
    from hydra.core.utils import JobStatus

    sweep_dir = _RUN.dir
    overrides = [str(o) for o in config.hydra.overrides.task]
    with Manifest(sweep_dir).edit() as points:
        point = upsert(points, int(config.hydra.job.num), overrides)
        if point["status"] not in (PENDING, SUBMITTING):
            return
        if job_return.status == JobStatus.FAILED:
            point.update(status=ERROR, reason=f"{type(job_return._return_value).__name__}: {job_return._return_value}")
        elif config.get("dry_run"):
            point.update(status=DRY_RUN, reason=None)
        elif config.cluster.get("backend") == "local":  # ran to its end in this process
            point.update(status=LOCAL, reason=f"ran on this machine, exit code {job_return._return_value}")


def _stop_if_asked() -> None:
    if _RUN is None or _RUN.stop_reason is None:
        return
    _restore_signals()
    points = Manifest(_RUN.dir).read()
    try:
        print_end_table(_RUN.dir, points)
    except OSError:
        pass
    missing = [p for p in points if p.get("status") != SUBMITTED and p.get("status") != REJECTED]
    say(f"sweep stopped: {_RUN.stop_reason}")
    say(f"{sum(1 for p in points if p.get('status') == SUBMITTED)} of {len(points)} points went in; "
        f"{len(missing)} still to submit. Resume with: python -m launcher.jobs resume {_RUN.dir}")
    sys.exit(_RUN.exit_code or 1)


# ----------------------------------------------------------------------------- the end-of-sweep table


def refresh_states(sweep_dir: Path) -> list[dict]:
    """One sacct call (plus one squeue for jobs sacct does not list yet) for every job of the sweep."""
    from launcher.slurm.states import query_states, state_of

    points = Manifest(sweep_dir).read()
    ids = [p["job_id"] for p in points if p.get("job_id")]
    try:
        info = query_states(ids, timeout_s=20) if ids else {}
    except Exception:  # sacct missing or slow: the table shows what was recorded
        return points
    states = {job: state_of(info.get(job)) for job in ids if job in info}
    record_states(sweep_dir, states)
    return Manifest(sweep_dir).read()


def varying(points: list[dict]) -> tuple[list[str], set[str]]:
    """(overrides common to all points, keys whose values differ between points)."""
    if not points:
        return [], set()
    common = set(points[0]["overrides"])
    for p in points[1:]:
        common &= set(p["overrides"])
    keys = {o.split("=", 1)[0] for p in points for o in p["overrides"] if o not in common}
    return [o for o in points[0]["overrides"] if o in common], keys


def point_label(point: dict, common: list[str]) -> str:
    own = [o for o in point["overrides"] if o not in common]
    return " ".join(own) if own else "(no override)"


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def last_line(text: Optional[str]) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def sbatch_failure(reason: str) -> str:
    """"sbatch failed (permanent): sbatch: error: Batch job submission failed: X" -> "sbatch failed (permanent): X"."""
    kind = re.match(r"sbatch failed \(([^)]*)\)", reason)
    message = re.sub(r"^sbatch failed \([^)]*\): ", "", last_line(reason))
    message = re.sub(r"^sbatch: error: (Batch job submission failed: )?", "", message)
    return f"sbatch failed ({kind.group(1)}): {message}" if kind else f"sbatch failed: {message}"


def end_rows(points: list[dict]) -> list[list[str]]:
    common, _ = varying(points)
    rows = []
    for p in points:
        status = p.get("status")
        if status == SUBMITTED:
            job = p["job_id"]
        elif status == REJECTED:
            job = "rejected: " + shorten(p.get("reason") or "", 70)
        elif status == SUBMIT_FAILED:
            job = sbatch_failure(p.get("reason") or "")
        elif status == DRY_RUN:
            job = "dry run"
        elif status == ERROR:
            job = "error: " + (p.get("reason") or "")
        elif status == LOCAL:
            job = p.get("reason") or "ran on this machine"
        else:
            job = "not submitted"
        rows.append([str(p["index"]), point_label(p, common), job, p.get("job_dir") or ""])
    return rows


def print_end_table(sweep_dir: Path, points: list[dict], stream=None) -> None:
    from launcher.show.tables import print_table

    stream = stream or sys.stdout
    common, _ = varying(points)
    rejected = [p for p in points if p.get("status") == REJECTED]
    if rejected:
        print(f"\n{len(rejected)} invalid point(s), not submitted:", file=stream)
        for p in rejected:
            problems = p.get("problems") or [{"keys": [], "message": p.get("reason")}]
            why = "; ".join(f"{', '.join(q['keys'])}: {q['message']}" if q["keys"] else q["message"] for q in problems)
            print(f"  #{p['index']} {point_label(p, common)} -> {why}", file=stream)
    went_in = sum(1 for p in points if p.get("status") == SUBMITTED)
    title = f"sweep {sweep_dir}: {went_in} of {len(points)} points queued"
    if common:
        title += f"; every point: {' '.join(common)}"
    print_table(["#", "point", "job", "job folder"], end_rows(points), title=title, stream=stream)
