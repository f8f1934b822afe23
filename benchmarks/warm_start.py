#!/usr/bin/env python3
"""First versus second start of the same server, through the launcher: the shared compile caches at work.

    .venv/bin/python benchmarks/warm_start.py [--rounds 2]

Each round launches `python -m launcher +experiment=smoke cluster=local` three times, without
--enforce-eager (vLLM compiles the model with torch.compile, as it does on GPUs):

  cold    a fresh job root: an empty <job_root>/.cache (cluster.cache_dir's default)
  warm    the same job root again: the second job of a sweep, or a requeued attempt, finds the caches
          (VLLM_CACHE_ROOT, TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR) the first one wrote
  cold 2  another fresh job root, after the warm run: the page cache is as warm as it gets, so what the
          warm run saved is the compile cache's doing

Printed: the supervisor's "server healthy after N s" (result.json timings.server_healthy) of each, the
medians and the cold / warm ratio, and the size of the cache folder. On a GPU the lab measured 76 s cold
and 41 s warm for `trl vllm-serve` with the tiny model (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = ("cold", "warm", "cold 2")


def launch(root: Path) -> float:
    """Server healthy after N s (the supervisor's clock) of one launcher job in `root`."""
    argv = [sys.executable, "-m", "launcher", "+experiment=smoke", "cluster=local", f"cluster.job_root={root}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    for var in ("VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        env.pop(var, None)  # the launcher's own keyed folders, not the user's
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root)
    folder = re.search(r"job folder (\S+)", out.stdout + out.stderr)
    if out.returncode != 0 or folder is None:
        sys.exit(f"the launcher failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    result = json.loads((Path(folder.group(1)) / "attempt-1" / "result.json").read_text())
    return float(result["timings"]["server_healthy"])


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="warm-start-"))
    seen: dict[str, list[float]] = {run: [] for run in RUNS}
    try:
        for n in range(args.rounds):
            first, second = top / f"root-{n}-a", top / f"root-{n}-b"
            first.mkdir()
            second.mkdir()
            for run, root in zip(RUNS, (first, first, second)):
                seen[run].append(launch(root))
                print(f"  round {n + 1} {run:<7} server healthy after {seen[run][-1]:6.1f} s", flush=True)
            caches = first / ".cache" / "compile"
            print(f"  round {n + 1} cache folders: {', '.join(p.name for p in caches.iterdir())} "
                  f"({size_mb(caches):.1f} MB)", flush=True)
        med = {run: statistics.median(values) for run, values in seen.items()}
        print(f"\nvLLM on CPU (smoke model, torch.compile on), launch -> server healthy, medians of {args.rounds}:")
        for run in RUNS:
            print(f"  {run:<7} {med[run]:6.1f} s   ({', '.join(f'{v:.1f}' for v in seen[run])})")
        print(f"  cold / warm: {med['cold'] / med['warm']:.2f}x; cold 2 / warm: {med['cold 2'] / med['warm']:.2f}x; "
              f"saved {med['cold'] - med['warm']:.1f} s per start")
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
