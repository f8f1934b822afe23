#!/usr/bin/env python3
"""Time to queue a 64-point sweep vs a plain shell loop of 64 `sbatch` calls of the same scripts.

    source .slurm/env.sh   # the test cluster (scripts/slurm-test-cluster up)
    .venv/bin/python benchmarks/sweep_submit.py [--points 64] [--repeats 1]

What is timed, wall clock, on the test cluster:
  sweep (unthrottled)   `python -m launcher -m +experiment=smoke ... +grpo.seed=range(0,N)
                         cluster.submit_rate_per_s=1000`: process start to exit (Hydra, validation,
                         job folders with snapshots, the manifest, N sbatch calls, the final sacct)
  sweep (default rate)  the same with the default cluster.submit_rate_per_s (2/s): slower by design
  shell loop            `for f in <the sweep's N job.sbatch files>; do sbatch "$f"; done`
The jobs are held (`+cluster.sbatch.hold=true`: they never start) and cancelled after each phase
(`scancel -n <a name of this run's own>`). Prints each time and the ratios sweep / shell loop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cluster_env() -> dict[str, str]:
    env = dict(os.environ)
    state = Path(env.get("LAUNCHER_TEST_CLUSTER_STATE", REPO / ".slurm"))
    if "SLURM_CONF" not in env and (state / "env.sh").exists():
        for line in (state / "env.sh").read_text().splitlines():
            match = re.match(r"^export (\w+)=(.*)$", line.strip())
            if match:
                env[match.group(1)] = match.group(2).split("#")[0].strip().strip("'\"")
    if "SLURM_CONF" not in env:
        sys.exit("no test cluster: run scripts/slurm-test-cluster up; source .slurm/env.sh")
    return env


def cancel(env: dict, name: str) -> None:
    subprocess.run(["scancel", "-n", name], env=env, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], env=env, capture_output=True, text=True)
        if not out.stdout.strip():
            return
        time.sleep(0.5)


def queued(env: dict, name: str) -> int:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], env=env, capture_output=True, text=True)
    return len({line.split("+")[0] for line in out.stdout.split()})


def time_sweep(env: dict, root: Path, name: str, points: int, rate: float | None) -> tuple[float, list[Path]]:
    argv = [sys.executable, "-m", "launcher", "-m", "+experiment=smoke", "cluster=slurm", f"cluster.job_root={root}",
            f"name={name}", "+cluster.sbatch.hold=true", f"+grpo.seed=range(0,{points})",
            f"hydra.sweep.dir={root / 'sweep'}"]
    if rate is not None:
        argv.append(f"cluster.submit_rate_per_s={rate}")
    started = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"the sweep failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    n = queued(env, name)
    if n != points:
        sys.exit(f"the sweep queued {n} jobs, not {points}")
    scripts = sorted((root / name).glob("*/job.sbatch"))
    return elapsed, scripts


def time_loop(env: dict, scripts: list[Path], name: str) -> float:
    loop = 'for f in "$@"; do sbatch "$f" > /dev/null || exit 1; done'
    started = time.perf_counter()
    out = subprocess.run(["bash", "-c", loop, "loop", *map(str, scripts)], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"the shell loop failed: {out.stderr}")
    if queued(env, name) != len(scripts):
        sys.exit("the shell loop did not queue every script")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of (sweep, loop, default-rate sweep)")
    args = ap.parse_args()
    env = cluster_env()
    results: dict[str, list[float]] = {"sweep_unthrottled_s": [], "shell_loop_s": [], "sweep_default_rate_s": []}
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        for round_ in range(args.repeats):
            name = f"bench{secrets.token_hex(3)}"
            root = Path(tmp) / f"r{round_}-fast"
            try:
                fast, scripts = time_sweep(env, root, name, args.points, rate=1000)
                cancel(env, name)
                loop = time_loop(env, scripts, name)
                cancel(env, name)
                slow, _ = time_sweep(env, Path(tmp) / f"r{round_}-default", name, args.points, rate=None)
            finally:
                cancel(env, name)
            results["sweep_unthrottled_s"].append(fast)
            results["shell_loop_s"].append(loop)
            results["sweep_default_rate_s"].append(slow)
            print(f"round {round_ + 1}: sweep (rate 1000/s) {fast:.2f} s, shell loop {loop:.2f} s, "
                  f"sweep (default 2/s) {slow:.2f} s", flush=True)
    best = {k: min(v) for k, v in results.items()}
    summary = {
        "points": args.points,
        **{k: round(v, 2) for k, v in best.items()},
        "per_point_sweep_ms": round(1000 * best["sweep_unthrottled_s"] / args.points, 1),
        "per_point_loop_ms": round(1000 * best["shell_loop_s"] / args.points, 1),
        "ratio_sweep_unthrottled_vs_loop": round(best["sweep_unthrottled_s"] / best["shell_loop_s"], 2),
        "ratio_sweep_default_rate_vs_loop": round(best["sweep_default_rate_s"] / best["shell_loop_s"], 2),
    }
    print(json.dumps(summary, indent=2))
    print(f"RATIO time to queue {args.points} points: sweep / shell loop = "
          f"{summary['ratio_sweep_unthrottled_vs_loop']}x unthrottled ({best['sweep_unthrottled_s']:.1f} s vs "
          f"{best['shell_loop_s']:.1f} s), {summary['ratio_sweep_default_rate_vs_loop']}x at the default "
          f"2 sbatch/s ({best['sweep_default_rate_s']:.1f} s)")


if __name__ == "__main__":
    main()
