#!/usr/bin/env python3
"""Summaries of the colocate comparison (scripts/gpu/prove colo-1 .. colo-6): the same seeded GRPO run through
the launcher and by hand, alternating B L L B L B, on one GPU with the real-size model.

    colocate_report.py run --who by-hand|launcher --dir STEP_DIR --index I --t0 EPOCH --rc RC
                           [--cache DIR --cache-bytes-before N]           -> STEP_DIR/run.json
    colocate_report.py redo STEP_DIR [...]     (recompute brought-back run.json files, cache facts kept)
    colocate_report.py summary LOGDIR [LOGDIR ...] [--out FILE]            -> FILE (default LOGDIR/colocate.json)

Per run: job start -> end of the first optimizer step (the launcher: `python -m launcher` started -> its first
metrics.jsonl row; by hand: `accelerate launch` started -> the first step event), the step times (wall time
from the previous step's end to this step's end: the launcher's step_time_s, the by-hand script's `gap`), their
median over steps 2.. (step 1 holds the first generation's warm-up), TRL's own step_time per step, whether the
compile caches were cold, and vLLM's start-up lines where its INFO lines reach the logs (in colocate mode on the
H200 image they did not: only its progress bars).
Summary: per method, the median of all steps 2.. of its runs with the quartiles and the per-run medians, the
difference as a share of the by-hand median (all runs, and only the runs with the by-hand runs' rewards when
the launcher's differ), the time per step outside TRL's own `step_time` (what the launcher can add around a
step), and start-up cold / warm. Several LOGDIRs: rounds, in that order. Runs here too (pure Python, stdlib).
"""

from __future__ import annotations

import argparse
import ast
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


def trl_logs(trainer_log: Path) -> list[dict]:
    """The dicts TRL's Trainer prints per log (`{'loss': ...}`), from a by-hand trainer.log."""
    found = []
    try:
        text = trainer_log.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return found
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{'loss'"):
            try:
                found.append(ast.literal_eval(line))
            except (ValueError, SyntaxError):
                pass
    return found


def number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def reward_names(logs: list[dict]) -> list[str]:
    """TRL logs rewards/<name>/mean per reward function."""
    keys = logs[0].keys() if logs else []
    return sorted(k.split("/")[1] for k in keys if k.startswith("rewards/") and k.endswith("/mean"))


def by_hand_run(d: Path, t0: float) -> dict:
    events = rows_of(d / "events.jsonl")
    steps = [e for e in events if e.get("event") == "step" and "gap" in e]
    one = lambda kind: next((e for e in events if e.get("event") == kind), None)  # noqa: E731
    start, imports, ready, done = one("start"), one("imports_done"), one("trainer_ready"), one("train_done")
    logs = trl_logs(d / "trainer.log")
    return {
        "launch_to_script_start_s": round(start["t"] - t0, 2) if start else None,
        "launch_to_imports_done_s": round(imports["t"] - t0, 2) if imports else None,
        "launch_to_trainer_ready_s": round(ready["t"] - t0, 2) if ready else None,
        "launch_to_first_step_s": round(steps[0]["t_end"] - t0, 2) if steps else None,
        "step_s": [s["gap"] for s in steps],
        "trl_step_time_s": ([number(s.get("step_time")) for s in steps] if steps and "step_time" in steps[0] else
                            [number(x.get("step_time")) for x in logs] if len(logs) == len(steps) else []),
        "reward_funcs": reward_names(logs),
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
        "trl_step_time_s": [number((r.get("trl") or {}).get("step_time")) for r in rows],
        "reward_funcs": reward_names([r.get("trl") or {} for r in rows]),
        "weight_sync_s": [r.get("weight_sync_s") for r in rows],
        "reward": [r.get("reward") for r in rows],
        "loss": [r.get("loss") for r in rows],
        "attempt": str(attempt.relative_to(d)),
        "vllm": vllm_lines(sorted(attempt.glob("*.log"))),
    }


LISTS = ("step_s", "trl_step_time_s", "reward", "loss", "vllm", "weight_sync_s")


def measure(d: Path, run: dict) -> dict:
    """run (index, who, rc, t0 and the cache facts) completed from what the run left in `d`."""
    run.update(by_hand_run(d, run["t0"]) if run["who"] == "by-hand" else launcher_run(d, run["t0"]))
    run["steps"] = len(run.get("step_s") or [])
    run["median_step_s"] = median_after_first(run.get("step_s") or [])
    run["ok"] = run["rc"] == 0 and run["steps"] > 1
    return run


def cmd_redo(a: argparse.Namespace) -> int:
    """Recompute run.json files brought back from the GPU machine (its cache facts are kept as measured)."""
    for d in map(Path, a.dirs):
        old = json.loads((d / "run.json").read_text())
        keep = {k: old[k] for k in ("index", "who", "rc", "t0", "cache", "cache_bytes_before", "cache_bytes_after",
                                    "cold_cache") if k in old}
        (d / "run.json").write_text(json.dumps(measure(d, keep), indent=1))
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    d = Path(a.dir)
    run = {"index": a.index, "who": a.who, "rc": a.rc, "t0": a.t0}
    if a.cache:
        after = sum(p.stat().st_size for p in Path(a.cache).rglob("*") if p.is_file()) if Path(a.cache).exists() else 0
        run.update(cache=a.cache, cache_bytes_before=a.cache_bytes_before, cache_bytes_after=after,
                   cold_cache=a.cache_bytes_before == 0)
    measure(d, run)
    (d / "run.json").write_text(json.dumps(run, indent=1))
    print("COLO_RUN " + json.dumps({k: v for k, v in run.items() if k not in LISTS}))
    return 0 if run["ok"] else 1


def quartiles(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [round(v, 4) for v in values * 3][:3]
    q = statistics.quantiles(values, n=4)
    return [round(q[0], 4), round(statistics.median(values), 4), round(q[2], 4)]


def outside_trl(run: dict) -> list[float]:
    """Per step 2..: the step's wall time minus TRL's own step_time (its training_step: generation, rewards,
    weight sync, forward/backward): what runs around TRL's step (callbacks, logging, the loop itself)."""
    gaps, inner = run.get("step_s") or [], run.get("trl_step_time_s") or []
    if len(gaps) != len(inner):
        return []
    return [g - t for g, t in zip(gaps[1:], inner[1:]) if g is not None and t is not None]


def method_block(runs: list[dict]) -> dict:
    """Pooled steps 2.. (median, quartiles, range), per-run medians, the time outside TRL's step."""
    pooled = [t for r in runs for t in (r.get("step_s") or [])[1:] if t is not None]
    outside = [t for r in runs for t in outside_trl(r)]
    inner = [t for r in runs for t in (r.get("trl_step_time_s") or [])[1:] if t is not None]
    return {
        "runs": [r["name"] for r in runs],
        "steps_measured": len(pooled),
        "median_step_s": round(statistics.median(pooled), 4) if pooled else None,
        "quartiles_step_s": quartiles(pooled) if pooled else None,
        "min_max_step_s": [round(min(pooled), 4), round(max(pooled), 4)] if pooled else None,
        "run_medians_s": [r.get("median_step_s") for r in runs],
        "median_trl_step_time_s": round(statistics.median(inner), 4) if inner else None,
        "median_outside_trl_step_s": round(statistics.median(outside), 4) if outside else None,
        "quartiles_outside_trl_step_s": quartiles(outside) if outside else None,
    }


def compare(runs: list[dict]) -> dict:
    """Both methods' blocks and the launcher's difference as a share of the by-hand median."""
    out = {who: method_block([r for r in runs if r["who"] == who and r.get("ok")]) for who in ("by-hand", "launcher")}
    out["order"] = " ".join("B" if r["who"] == "by-hand" else "L" for r in runs)
    b, lau = out["by-hand"]["median_step_s"], out["launcher"]["median_step_s"]
    if b and lau:
        out["launcher_minus_by_hand_s"] = round(lau - b, 4)
        out["launcher_share"] = round((lau - b) / b, 4)
        out["within_2_percent"] = (lau - b) / b <= 0.02
        medians = [m for m in out["by-hand"]["run_medians_s"] + out["launcher"]["run_medians_s"] if m]
        out["run_median_spread_share"] = round((max(medians) - min(medians)) / b, 4)
    ob, ol = out["by-hand"]["median_outside_trl_step_s"], out["launcher"]["median_outside_trl_step_s"]
    if ob is not None and ol is not None and b:
        out["outside_trl_launcher_minus_by_hand_s"] = round(ol - ob, 4)
        out["outside_trl_share_of_step"] = round((ol - ob) / b, 4)
    return out


def summarize(runs: list[dict]) -> dict:
    """All runs; the runs whose rewards are the by-hand runs' (like for like); start-up cold and warm."""
    runs = sorted(runs, key=lambda r: (r.get("round", 1), r["index"]))
    for r in runs:
        r.setdefault("name", f"{r.get('round', 1)}.{r['index']}")
    out: dict = {"runs": [{k: r.get(k) for k in ("name", "who", "ok", "steps", "median_step_s", "launch_to_first_step_s",
                                                 "launch_to_script_start_s", "launch_to_trainer_ready_s", "cold_cache",
                                                 "cache_bytes_after", "reward_funcs")} for r in runs]}
    out["all"] = compare(runs)
    by_hand_rewards = {tuple(r.get("reward_funcs") or []) for r in runs if r["who"] == "by-hand"}
    same = [r for r in runs if tuple(r.get("reward_funcs") or []) in by_hand_rewards]
    if len(same) < len(runs):
        out["same_reward"] = compare(same)
    for who in ("by-hand", "launcher"):
        mine = [r for r in runs if r["who"] == who and r.get("ok")]
        out.setdefault("startup", {})[who] = {
            "first_step_cold_s": [r.get("launch_to_first_step_s") for r in mine if r.get("cold_cache")],
            "first_step_warm_s": [r.get("launch_to_first_step_s") for r in mine if not r.get("cold_cache")],
        }
        warm = out["startup"][who]["first_step_warm_s"]
        out["startup"][who]["median_warm_s"] = round(statistics.median(warm), 2) if warm else None
    return out


def cmd_summary(a: argparse.Namespace) -> int:
    runs = []
    for n, logdir in enumerate(a.logdir, 1):  # several logdirs: rounds, in the order given
        for p in sorted(Path(logdir).glob("*/run.json")):
            run = json.loads(p.read_text())
            run["round"] = n
            runs.append(run)
    if not runs:
        print("no run.json under", " ".join(a.logdir))
        return 1
    summary = summarize(runs)
    out = Path(a.out) if a.out else Path(a.logdir[0]) / "colocate.json"
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
    s.add_argument("logdir", nargs="+")
    s.add_argument("--out")
    d = sub.add_parser("redo")
    d.add_argument("dirs", nargs="+")
    a = ap.parse_args(argv)
    return {"run": cmd_run, "summary": cmd_summary, "redo": cmd_redo}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
