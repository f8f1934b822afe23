"""The sweep report: `python -m launcher.jobs report <sweep folder>`.

Reads what each job of the sweep wrote into its folder: the trainer's metrics.jsonl rows (kind
"train": step_time_s, tokens_per_s, reward; kind "preflight": tokens_per_s, reward of the preflight
generation) and the supervisor's result.json (state, timings.server_healthy = the server's startup
time). Writes report.csv and report.png (needs matplotlib: `pip install launcher[report]`) into the
sweep folder and prints the table and the best point.

Per job:
  tokens_per_s   median over the training rows, the first one left out (warm-up: compile, first
                 weight sync); a job that only ran preflight: the preflight's generation throughput
  step_time_s    median over the same training rows (none for preflight)
  reward         mean of the last 5 training rows' reward; preflight: the preflight's mean reward
  server_startup_s  seconds from the supervisor's start to the server's first /health 200 (first attempt)
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

from launcher.jobfolder.layout import attempts
from launcher.jobfolder.progress import read_metrics
from launcher.jobfolder.records import read_result
from launcher.sweep.manifest import REJECTED
from launcher.sweep.table import refresh_states, varying

METRICS = ("tokens_per_s", "step_time_s", "reward", "steps", "server_startup_s")
BETTER = {"tokens_per_s": max, "reward": max, "step_time_s": min}
SHORT = {"tensor_parallel_size": "TP", "data_parallel_size": "DP"}
REWARD_ROWS = 5


def _numbers(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]


def summarize_job(job_dir: Path) -> dict[str, Any]:
    """The report's numbers for one job folder (None where the job did not write them)."""
    folders = attempts(job_dir)
    rows = [row for folder in folders for row in read_metrics(folder)]
    train = [r for r in rows if r.get("kind") == "train"]
    preflight = [r for r in rows if r.get("kind") == "preflight"]
    out: dict[str, Any] = {k: None for k in METRICS}
    out["metrics_from"] = ""
    if train:
        steady = train[1:] if len(train) > 1 else train
        tps, times = _numbers(steady, "tokens_per_s"), _numbers(steady, "step_time_s")
        rewards = _numbers(train, "reward")[-REWARD_ROWS:]
        out.update(tokens_per_s=statistics.median(tps) if tps else None,
                   step_time_s=statistics.median(times) if times else None,
                   reward=statistics.fmean(rewards) if rewards else None,
                   steps=max(int(r.get("step") or 0) for r in train), metrics_from="train")
    elif preflight:
        last = preflight[-1]
        out.update(tokens_per_s=last.get("tokens_per_s"), reward=last.get("reward"), steps=0,
                   metrics_from="preflight")
    for folder in folders:
        result = read_result(folder)
        if result is not None and result.timings.get("server_healthy") is not None:
            out["server_startup_s"] = float(result.timings["server_healthy"])
            break
    result = read_result(folders[-1]) if folders else None
    out["result"] = result.state.value if result is not None else None
    return out


def short_label(overrides: list[str]) -> str:
    """`server.tensor_parallel_size=2 server.data_parallel_size=1` -> `TP=2 DP=1`."""
    parts = []
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        name = key.split(".")[-1]
        parts.append(f"{SHORT.get(name, name)}={value}")
    return " ".join(parts) or "(no override)"


def collect(sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """One row per point of the sweep (states read in one sacct call); and the swept keys."""
    points = refresh_states(sweep_dir)
    common, keys = varying(points)
    swept = sorted(keys)
    rows = []
    for p in points:
        own = [o for o in p["overrides"] if o not in common]
        values = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in own if "=" in o}
        row: dict[str, Any] = {"index": p["index"], "point": short_label(own), "job_id": p.get("job_id"),
                               "state": p.get("state") if p.get("job_id") else p.get("status")}
        row.update({k: values.get(k) for k in swept})
        summary = summarize_job(Path(p["job_dir"])) if p.get("job_id") and p.get("job_dir") else {}
        row.update({k: summary.get(k) for k in METRICS})
        row["metrics_from"] = summary.get("metrics_from", "")
        if p.get("status") == REJECTED:
            row["state"] = "REJECTED"
        row["job_dir"] = p.get("job_dir")
        rows.append(row)
    return rows, swept


def best_row(rows: list[dict], by: str) -> Optional[dict]:
    candidates = [r for r in rows if r.get(by) is not None and r.get("state") == "COMPLETED"]
    candidates = candidates or [r for r in rows if r.get(by) is not None]
    return BETTER[by](candidates, key=lambda r: r[by]) if candidates else None


def write_csv(rows: list[dict], swept: list[str], path: Path) -> None:
    columns = ["index", "point", *swept, "job_id", "state", "metrics_from", *METRICS, "job_dir"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def plot(rows: list[dict], path: Path, by: str, title: str) -> bool:
    """Bars per point: throughput, reward, server startup; the best point highlighted. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [("tokens_per_s", "throughput (completion tokens/s)"), ("reward", "reward"),
              ("server_startup_s", "server startup (s)")]
    panels = [p for p in panels if any(r.get(p[0]) is not None for r in rows)] or panels[:2]
    best = best_row(rows, by)
    labels = [f"#{r['index']} {r['point']}" for r in rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.9 * len(rows) + 2), 2.6 * len(panels) + 0.6),
                             sharex=True, squeeze=False)
    for ax, (key, name) in zip(axes[:, 0], panels):
        values = [r.get(key) if r.get(key) is not None else 0.0 for r in rows]
        colors = ["#d62728" if best is not None and r is best else "#1f77b4" for r in rows]
        bars = ax.bar(range(len(rows)), values, color=colors)
        for bar, r in zip(bars, rows):
            if r.get(key) is None:
                ax.annotate(str(r.get("state") or "n/a").split()[0].lower(), (bar.get_x() + bar.get_width() / 2, 0),
                            ha="center", va="bottom", fontsize=7, rotation=90, color="#555555")
            else:
                ax.annotate(_fmt(float(r[key])), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
        if not any(values):  # all zero (a random model's reward): a plain 0..1 axis, not a -0.06..0.06 one
            ax.set_ylim(0, 1)
        ax.set_ylabel(name, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.2)
    axes[-1, 0].set_xticks(range(len(rows)))
    axes[-1, 0].set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    fig.suptitle(title + (f"\nbest by {by}: #{best['index']} {best['point']}" if best else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def run_report(sweep_dir: Path, out_dir: Optional[Path] = None, by: str = "tokens_per_s") -> int:
    from launcher.show.tables import print_table

    out_dir = out_dir or sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, swept = collect(sweep_dir)
    if not rows:
        print(f"launcher: {sweep_dir} has no points", file=sys.stderr)
        return 1
    csv_path, png_path = out_dir / "report.csv", out_dir / "report.png"
    write_csv(rows, swept, csv_path)
    print_table(["#", "point", "job", "state", "tokens/s", "step s", "reward", "server up s", "from"],
                [[str(r["index"]), r["point"], r.get("job_id") or "-", str(r.get("state") or "-"),
                  _fmt(r["tokens_per_s"]), _fmt(r["step_time_s"]), _fmt(r["reward"]), _fmt(r["server_startup_s"]),
                  r.get("metrics_from") or "-"] for r in rows],
                title=f"report of {sweep_dir}")
    print(f"launcher: wrote {csv_path}")
    if plot(rows, png_path, by, f"sweep {sweep_dir.name}"):
        print(f"launcher: wrote {png_path}")
    else:
        print("launcher: no plot: matplotlib is not installed (pip install 'launcher[report]')", file=sys.stderr)
    best = best_row(rows, by)
    if best is None:
        print(f"launcher: no point has {by} yet (no job finished with metrics)")
        return 1
    print(f"launcher: best point by {by}: #{best['index']} {best['point']}: {_fmt(best['tokens_per_s'])} tokens/s, "
          f"reward {_fmt(best['reward'])}, server up in {_fmt(best['server_startup_s'])} s "
          f"(job {best['job_id']}, {best['job_dir']})")
    return 0
