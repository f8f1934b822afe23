#!/usr/bin/env python3
"""Login-node latency: the dry-run command side by side with importing its two base libraries.

    python benchmarks/login_latency.py [--runs 10]

Prints the median wall time of each and their ratio. The dry-run composes the Hydra config, validates,
builds the plan and renders the sbatch script; the baseline only imports hydra and submitit.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import hydra, submitit": [sys.executable, "-c", "import hydra, submitit"],
    "launcher dry-run": [sys.executable, "-m", "launcher", "+experiment=deepmath", "cluster=slurm", "dry_run=true"],
}


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    for argv in COMMANDS.values():
        timed(argv)  # warm the page cache and .pyc files
    medians = {}
    for name, argv in COMMANDS.items():
        samples = [timed(argv) for _ in range(args.runs)]
        medians[name] = statistics.median(samples)
        print(f"{name:<24} median {medians[name] * 1000:7.1f} ms  (min {min(samples) * 1000:.1f}, "
              f"max {max(samples) * 1000:.1f}, {args.runs} runs)")
    ratio = medians["launcher dry-run"] / medians["import hydra, submitit"]
    print(f"ratio dry-run / imports: {ratio:.2f}x")


if __name__ == "__main__":
    main()
