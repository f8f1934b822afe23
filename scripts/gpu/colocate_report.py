#!/usr/bin/env python3
"""Summaries of the colocate comparison (scripts/gpu/prove colo-1 .. colo-6): the same seeded GRPO run through
the launcher and by hand, alternating B L L B L B, on one GPU with the real-size model.

    colocate_report.py run --who by-hand|launcher --dir STEP_DIR --index I --t0 EPOCH --rc RC
                           [--cache DIR --cache-bytes-before N]           -> STEP_DIR/run.json
    colocate_report.py summary LOGDIR [--out FILE]                         -> FILE (default LOGDIR/colocate.json)

Per run: job start -> end of the first optimizer step (the launcher: `python -m launcher` started -> its first
metrics.jsonl row; by hand: `accelerate launch` started -> the first step event), the step times (wall time
from the previous step's end to this step's end: the launcher's step_time_s, the by-hand script's `gap`), their
median over steps 2.. (step 1 holds the first generation's warm-up), whether the compile caches were cold, and
vLLM's own start-up lines (compile, CUDA graphs, engine init) from the logs.
Summary: per method, the median of all steps 2.. of its runs with the quartiles and the per-run medians, the
difference as a share of the by-hand median, and start-up cold / warm. Runs here too (pure Python, stdlib).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

VLLM_LINES = re.compile(r"torch\.compile take|Compiling a graph|compiled graph|from the cache|Graph capturing finished|"
                        r"init engine|Model loading took|Loading weights took|Memory profiling takes|KV cache")


def rows_of(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def vllm_lines(logs: list[Path], limit: int = 14) -> list[str]:
    found: list[str] = []
    for log in logs:
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if VLLM_LINES.search(line) and len(found) < limit:
                found.append(line.strip()[-220:])
    return found


def median_after_first(times: list[float]) -> float | None:
    rest = [t for t in times[1:] if t is not None]
    return round(statistics.median(rest), 4) if rest else None


def by_hand_run(d: Path, t0: float) -> dict:
    events = rows_of(d / "events.jsonl")
    steps = [e for e in events if e.get("event") == "step" and "gap" in e]
    one = lambda kind: next((e for e in events if e.get("event") == kind), None)  # noqa: E731
    ready, done = one("trainer_ready"), one("train_done")
    return {
        "launch_to_trainer_ready_s": round(ready["t"] - t0, 2) if ready else None,
        "launch_to_first_step_s": round(steps[0]["t_end"] - t0, 2) if steps else None,
        "step_s": [s["gap"] for s in steps],
        "reward": [s.get("reward") for s in steps],
        "loss": [s.get("loss") for s in steps],
        "max_mem_alloc_GiB": done.get("max_mem_alloc_GiB") if done else None,
        "error": (one("error") or {}).get("message"),
        "vllm": vllm_lines([d / "trainer.log"]),
    }


def launcher_run(d: Path, t0: float) -> dict:
    attempts = sorted(d.glob("jobs/*/*/attempt-*"))
    if not attempts:
        return {"error": "no job folder"}
    attempt = attempts[-1]
    try:
        result = json.loads((attempt / "result.json").read_text())
    except (OSError, ValueError):
        result = {}
    rows = [r for r in rows_of(attempt / "metrics.jsonl") if r.get("kind") == "train"]
    return {
        "job_state": result.get("state"),
        "job_reason": (result.get("reason") or "").splitlines()[0] if result.get("reason") else None,
        "launch_to_first_step_s": round(rows[0]["time"] - t0, 2) if rows else None,
        "step_s": [r.get("step_time_s") for r in rows],
        "weight_sync_s": [r.get("weight_sync_s") for r in rows],
        "reward": [r.get("reward") for r in rows],
        "loss": [r.get("loss") for r in rows],
        "attempt": str(attempt.relative_to(d)),
        "vllm": vllm_lines(sorted(attempt.glob("*.log"))),
    }


def cmd_run(a: argparse.Namespace) -> int:
    d = Path(a.dir)
    run = {"index": a.index, "who": a.who, "rc": a.rc, "t0": a.t0}
    run.update(by_hand_run(d, a.t0) if a.who == "by-hand" else launcher_run(d, a.t0))
    run["steps"] = len(run.get("step_s") or [])
    run["median_step_s"] = median_after_first(run.get("step_s") or [])
    if a.cache:
        after = sum(p.stat().st_size for p in Path(a.cache).rglob("*") if p.is_file()) if Path(a.cache).exists() else 0
        run.update(cache=a.cache, cache_bytes_before=a.cache_bytes_before, cache_bytes_after=after,
                   cold_cache=a.cache_bytes_before == 0)
    run["ok"] = a.rc == 0 and run["steps"] > 1
    (d / "run.json").write_text(json.dumps(run, indent=1))
    print("COLO_RUN " + json.dumps({k: v for k, v in run.items() if k not in ("step_s", "reward", "loss", "vllm",
                                                                               "weight_sync_s")}))
    return 0 if run["ok"] else 1


def quartiles(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [round(v, 4) for v in values * 3][:3]
    q = statistics.quantiles(values, n=4)
    return [round(q[0], 4), round(statistics.median(values), 4), round(q[2], 4)]


def summarize(runs: list[dict]) -> dict:
    """Per method: pooled steps 2.. (median, quartiles), per-run medians; the launcher's share; start-ups."""
    runs = sorted(runs, key=lambda r: r["index"])
    out: dict = {"order": " ".join("B" if r["who"] == "by-hand" else "L" for r in runs),
                 "runs": [{k: r.get(k) for k in ("index", "who", "ok", "steps", "median_step_s", "launch_to_first_step_s",
                                                 "launch_to_trainer_ready_s", "cold_cache", "cache_bytes_after")}
                          for r in runs]}
    for who in ("by-hand", "launcher"):
        mine = [r for r in runs if r["who"] == who and r.get("ok")]
        pooled = [t for r in mine for t in (r.get("step_s") or [])[1:] if t is not None]
        starts = [(bool(r.get("cold_cache")), r.get("launch_to_first_step_s")) for r in mine]
        out[who] = {
            "runs": len(mine),
            "steps_measured": len(pooled),
            "median_step_s": round(statistics.median(pooled), 4) if pooled else None,
            "quartiles_step_s": quartiles(pooled) if pooled else None,
            "min_max_step_s": [round(min(pooled), 4), round(max(pooled), 4)] if pooled else None,
            "run_medians_s": [r.get("median_step_s") for r in mine],
            "first_step_cold_s": [s for cold, s in starts if cold],
            "first_step_warm_s": [s for cold, s in starts if not cold],
        }
    b, lau = out["by-hand"]["median_step_s"], out["launcher"]["median_step_s"]
    if b and lau:
        out["launcher_minus_by_hand_s"] = round(lau - b, 4)
        out["launcher_share"] = round((lau - b) / b, 4)
        out["within_2_percent"] = abs(lau - b) / b <= 0.02
        medians = [m for m in out["by-hand"]["run_medians_s"] + out["launcher"]["run_medians_s"] if m]
        out["run_median_spread_share"] = round((max(medians) - min(medians)) / b, 4)
    return out


def cmd_summary(a: argparse.Namespace) -> int:
    runs = [json.loads(p.read_text()) for p in sorted(Path(a.logdir).glob("*/run.json"))]
    if not runs:
        print("no run.json under", a.logdir)
        return 1
    summary = summarize(runs)
    out = Path(a.out) if a.out else Path(a.logdir) / "colocate.json"
    out.write_text(json.dumps(summary, indent=1))
    print("COLO_SUMMARY " + json.dumps(summary))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--who", choices=["by-hand", "launcher"], required=True)
    r.add_argument("--dir", required=True)
    r.add_argument("--index", type=int, required=True)
    r.add_argument("--t0", type=float, required=True)
    r.add_argument("--rc", type=int, required=True)
    r.add_argument("--cache")
    r.add_argument("--cache-bytes-before", type=int, default=0)
    s = sub.add_parser("summary")
    s.add_argument("logdir")
    s.add_argument("--out")
    a = ap.parse_args(argv)
    return cmd_run(a) if a.cmd == "run" else cmd_summary(a)


if __name__ == "__main__":
    sys.exit(main())
