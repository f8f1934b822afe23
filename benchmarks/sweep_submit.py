#!/usr/bin/env python3
"""Time to queue a 64-point sweep vs a plain shell loop of 64 `sbatch` calls of the same scripts.

    source .slurm/env.sh   # the test cluster (scripts/slurm-test-cluster up)
    .venv/bin/python benchmarks/sweep_submit.py [--points 64] [--repeats 1] [--no-default-rate]

What is timed, wall clock, on the test cluster:
  sweep (unthrottled)   `python -m launcher -m +experiment=smoke ... +grpo.seed=range(0,N)
                         cluster.submit_rate_per_s=1000`: process start to exit (Hydra, validation,
                         job folders with snapshots, the manifest, N sbatch calls, the final sacct)
  sweep of 1 point      the same with N=1: the fixed cost (interpreter, imports, Hydra's own two
                        compositions, the final sacct and table)
  shell loop            `for f in <the sweep's N job.sbatch files>; do sbatch "$f"; done`: what the
                        N sbatch calls themselves cost
  sweep (default rate)  the same sweep with the default cluster.submit_rate_per_s (2/s): slower by design
The launcher's own cost per point is (sweep - shell loop) / N: everything but sbatch itself (the
unthrottled sweep never waits for its rate limit: 1000/s is less than one sbatch call). Of that, the
fixed part is (sweep of 1 point - one sbatch); the rest, per point, is the marginal cost.
Job folders go under ./jobs of this checkout (the default job root), as a user's would.
The jobs are held (`+cluster.sbatch.hold=true`: they never start) and cancelled after each phase
(`scancel -n <a name of this run's own>`). With --repeats, every derived number (the launcher's own, fixed,
per point) is worked out within each round (the same machine load) and shown as the median of the rounds
and the best round.

The goal (issue 11): the launcher's own cost at most --goal-ms (15) ms a point for 64 points on the 2-core
test machine, met by the median of the rounds; the last lines say whether this run met it, with the load
average before and after (the machine is shared: a busy machine slows sbatch, Python and the disk alike;
run it under `flock /work/heavy.lock` where other sessions share the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _cluster import REPO, cluster_env  # benchmarks/_cluster.py (this script's folder is on sys.path)


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


def one_round(env: dict, tmp: Path, round_: int, points: int, default_rate: bool) -> dict[str, float]:
    name = f"bench{secrets.token_hex(3)}"
    result: dict[str, float] = {}
    try:
        result["sweep_unthrottled_s"], scripts = time_sweep(env, tmp / f"r{round_}-fast", name, points, rate=1000)
        cancel(env, name)
        result["shell_loop_s"] = time_loop(env, scripts, name)
        cancel(env, name)
        result["sweep_1_point_s"], _ = time_sweep(env, tmp / f"r{round_}-one", name, 1, rate=1000)
        cancel(env, name)
        if default_rate:
            result["sweep_default_rate_s"], _ = time_sweep(env, tmp / f"r{round_}-default", name, points, rate=None)
    finally:
        cancel(env, name)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="rounds; the median and the best round are shown")
    ap.add_argument("--no-default-rate", action="store_true", help="skip the sweep at the default 2 sbatch/s")
    ap.add_argument("--goal-ms", type=float, default=15.0, help="the launcher's own cost per point to meet")
    args = ap.parse_args()
    env = cluster_env()
    load_before = os.getloadavg()
    rounds = []
    # job folders where users have them: under ./jobs (cluster.job_root's default) of the launch directory,
    # not /tmp (creating a file in /tmp costs ~0.7 ms on these machines, 0.02-0.07 ms elsewhere on the same disk)
    (REPO / "jobs").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sweep-bench-", dir=REPO / "jobs") as tmp:
        for round_ in range(args.repeats):
            r = one_round(env, Path(tmp), round_, args.points, not args.no_default_rate)
            rounds.append(r)
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), flush=True)
    n = args.points
    derived = [derive(r, n) for r in rounds]
    median = {k: statistics.median(d[k] for d in derived) for k in derived[0]}
    best_round = min(range(len(rounds)), key=lambda i: derived[i]["own_ms"])
    best = derived[best_round]
    summary = {
        "points": n,
        "rounds": rounds,
        "median_of_rounds": {k: round(v, 3) for k, v in median.items()},
        "best_round": {"round": best_round + 1, **{k: round(v, 3) for k, v in best.items()}},
        "goal_launcher_own_per_point_ms": args.goal_ms,
        "goal_met_by_the_median": median["own_ms"] <= args.goal_ms,
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(summary, indent=2))
    print(f"\n{n} points, {len(rounds)} round(s)   median of the rounds      best round (#{best_round + 1})")
    print(f"{'':21}{'total':>8} {'per point':>11}   {'total':>8} {'per point':>11}")

    def row(label: str, key: str, note: str = "") -> None:
        m, b = median[key], best[key]
        print(f"{label:<21}{m:7.2f} s {1000 * m / n:8.1f} ms   {b:7.2f} s {1000 * b / n:8.1f} ms{note}")

    row("shell loop (sbatch)", "loop_s")
    row("sweep, unthrottled", "sweep_s", f"   ({median['sweep_s'] / median['loop_s']:.1f}x the loop, median)")
    row("launcher's own", "own_s", "   (sweep - loop: everything but sbatch)")
    row("  fixed", "fixed_s", "   (a 1-point sweep less one sbatch)")
    row("  per point", "marginal_s", "   (the rest)")
    if "default_rate_s" in median:
        row("sweep, 2 sbatch/s", "default_rate_s", "   (the default rate limit decides)")
    verdict = "met" if median["own_ms"] <= args.goal_ms else "NOT met"
    print(f"goal: the launcher's own <= {args.goal_ms:g} ms a point, by the median of the rounds: {verdict} "
          f"(median {median['own_ms']:.1f} ms, best round {best['own_ms']:.1f} ms, rounds "
          f"{', '.join(format(d['own_ms'], '.1f') for d in derived)}; load average "
          f"{summary['load_average_1min_before_after'][0]} before, {summary['load_average_1min_before_after'][1]} after)")


def derive(r: dict[str, float], n: int) -> dict[str, float]:
    """One round's numbers, its own cost split into fixed and per point (all within the same round)."""
    sweep, loop, one = r["sweep_unthrottled_s"], r["shell_loop_s"], r["sweep_1_point_s"]
    own = sweep - loop
    fixed = one - loop / n
    out = {"sweep_s": sweep, "loop_s": loop, "own_s": own, "own_ms": 1000 * own / n, "fixed_s": fixed,
           "marginal_s": own - fixed}
    if "sweep_default_rate_s" in r:
        out["default_rate_s"] = r["sweep_default_rate_s"]
    return out


if __name__ == "__main__":
    main()
