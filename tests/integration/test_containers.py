"""The smoke het job on the real test cluster with both components inside a container image (charliecloud,
Debian 12's package): the image is built offline by scripts/build-test-image (Debian packages installed here,
the project's venv, the launcher from a wheel of this checkout; nothing from an image registry).

The proof that a component ran inside the image is the kernel's, read from outside while the job runs: each
process of the job is found by the job folder in its environment (as in test_faults), and its root
filesystem (/proc/<pid>/root) must hold the image's marker /etc/launcher-test-image with this build's
fingerprint, its environment ch-run's CH_RUNNING. The counter-check rides in the same job: the supervisor
(the batch step and its sruns) stays on the host, and the same probe must see neither on its processes. (A
component kept on the host with `server.container.runtime=none` is pinned by tests/test_containers.py's plan
tests; a second real job for it cost CI 1.5 minutes and proved the same probe again.)
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import CLUSTER, REPO, launch, wait_state
from .test_faults import no_job_processes

pytestmark = pytest.mark.cluster

IMAGE = REPO / ".images" / "launcher-test"
MARKER = "etc/launcher-test-image"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"  # the image has the venv at its own path


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built (or kept, when its inputs' fingerprint is unchanged) by the project's script."""
    out = subprocess.run([str(REPO / "scripts" / "build-test-image"), str(IMAGE)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    marker = (IMAGE / MARKER).read_text().strip()
    assert marker.startswith("launcher-test-image ") and marker.split()[1] in out.stdout, out.stdout
    assert not Path("/", MARKER).exists()  # the host has no marker: the probe can tell the two apart
    return marker


def _environ(pid: str) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _seen_from_inside(pid: str) -> str | None:
    """What the process sees at /etc/launcher-test-image in its own root filesystem (None: nothing)."""
    try:
        return Path(f"/proc/{pid}/root", MARKER).read_text().strip()
    except OSError:
        return None


def _where(job) -> dict[str, dict]:
    """Each process of the job now (pid -> node, role, command, marker seen, CH_RUNNING); the role is the
    step's job name (smoke-server, smoke-trainer) for a step's tasks, 'supervisor' for the batch step and
    the sruns it started. A process whose environment names another job folder is not ours."""
    out = subprocess.run([str(CLUSTER), "procs", "--all"], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        pid, node, cmd = (line.split("\t") + ["", ""])[:3]
        env = _environ(pid)
        if env.get("LAUNCHER_JOB_DIR") != str(job.job_dir) or not cmd or cmd.startswith("slurmstepd"):
            continue
        task = bool(env.get("SLURM_STEP_ID")) and not cmd.split()[0].endswith("srun")  # a step's task
        found[pid] = {"node": node, "role": env.get("SLURM_JOB_NAME", "?") if task else "supervisor",
                      "cmd": cmd[:100], "marker": _seen_from_inside(pid), "ch_running": "CH_RUNNING" in env}
    return found


class Watcher:
    """Samples the job's processes every 0.25 s until stopped (each component lives tens of seconds)."""

    def __init__(self, job):
        self.job, self.seen, self._stop = job, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for pid, info in _where(self.job).items():
                # a wrapper execs its component under the same pid: every sighting counts (commands, markers)
                known = self.seen.setdefault(pid, dict(info, cmd=set(), marker=set(), ch_running=True))
                known["cmd"].add(info["cmd"])
                known["marker"].add(info["marker"])
                known["ch_running"] = known["ch_running"] and info["ch_running"]
            self._stop.wait(0.25)

    def stop(self) -> dict[str, list[dict]]:
        """The processes seen, by role."""
        self._stop.set()
        self._thread.join()
        roles: dict[str, list[dict]] = {}
        for info in self.seen.values():
            roles.setdefault(info["role"], []).append(info)
        return roles


def _container_args(image_dir: Path, hf_home: Path) -> tuple[str, ...]:
    """What a user types: the runtime, the image, its Python, the smoke assets bound at their own path, and a
    Hugging Face cache the nodes share (the trainer's datasets cache is written there; the image is read-only).
    Three GRPO steps (weights synced to the server at each): the proof needs a run, not a long one."""
    smoke = Path(os.environ.get("LAUNCHER_CACHE", Path.home() / ".cache" / "launcher"))
    hf_home.mkdir(parents=True, exist_ok=True)
    return ("cluster.container.runtime=charliecloud", f"cluster.container.image={image_dir}",
            f"cluster.python={VENV_PYTHON}", f"cluster.container.mounts=[{smoke}:{smoke}]",
            f"cluster.hf_home={hf_home}", "grpo.max_steps=3", "grpo.save_steps=3")


def _run(cluster_env, tmp_path, *overrides) -> tuple[object, dict[str, list[dict]], float]:
    t0 = time.monotonic()
    job = launch(cluster_env, tmp_path, *_container_args(IMAGE, tmp_path / "hf"), *overrides)
    watcher = Watcher(job)
    try:
        state = wait_state(job.job_id, 400)
    finally:
        roles = watcher.stop()
    seconds = time.monotonic() - t0
    logs = "".join((job.attempt / f).read_text()[-3000:] for f in ("supervisor.log", "server.log", "trainer.log")
                   if (job.attempt / f).exists())
    assert state == "COMPLETED", logs
    assert no_job_processes(job) == []  # nothing of the job left on any node, inside the image or out
    return job, roles, seconds


def _inside(processes: list[dict], marker: str) -> bool:
    """At every sighting, every process saw this build's marker at its root and had ch-run's variable
    (and there was one)."""
    return bool(processes) and all(p["marker"] == {marker} and p["ch_running"] for p in processes)


def _on_host(processes: list[dict]) -> bool:
    return bool(processes) and all(p["marker"] == {None} and not p["ch_running"] for p in processes)


def _ran(processes: list[dict], *words: str) -> bool:
    """One of the processes ran a command naming one of `words` (at some sighting)."""
    return any(word in cmd for p in processes for cmd in p["cmd"] for word in words)


def _show(roles) -> str:
    return "\n".join(f"{role}: {p}" for role, ps in roles.items() for p in ps)


def test_smoke_job_runs_both_components_inside_the_image(cluster_env, smoke_assets, image, tmp_path):
    # the compile caches outside the job root (and outside /tmp, which ch-run binds anyway): a folder the image
    # has (scripts/build-test-image), bound by the launcher at its own path; kept between runs, as in a sweep
    caches = Path.home() / ".cache" / "launcher-compile"
    job, roles, seconds = _run(cluster_env, tmp_path, f"cluster.cache_dir={caches}")
    server, trainer, supervisor = roles.get("smoke-server", []), roles.get("smoke-trainer", []), roles.get("supervisor", [])
    # the components themselves (vLLM's server, the trainer), not only helpers they started, were seen
    assert _ran(server, "vllm") and _ran(trainer, "launcher.components.trainer_step", "launcher.train"), _show(roles)
    assert _inside(server, image) and _inside(trainer, image), _show(roles)
    assert {p["node"] for p in server} == {"node1"} and {p["node"] for p in trainer} == {"node2"}, _show(roles)
    # the supervisor (the batch step, its sruns) stays on the host: the same probe tells it apart
    assert _on_host(supervisor) and _ran(supervisor, "submitit"), _show(roles)
    # both wrote their records through the bound job folder, from inside
    assert (job.attempt / "node-server-node1.json").exists() and (job.attempt / "node-trainer-node2.json").exists()
    assert json.loads((job.attempt / "versions.json").read_text())["host"] == "node2"
    # the caches each component was given are in the bound folder, and what vLLM's CPU kernels compiled there
    # is on the host: the image's own folder at that path is empty, so it came through the bind
    given = {name: json.loads((job.attempt / f"node-{name}-{node}.json").read_text())["caches"]
             for name, node in (("server", "node1"), ("trainer", "node2"))}
    assert set(given["server"]) == {"VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"}, given
    assert set(given["trainer"]) == {"TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"}, given  # server mode: no vLLM
    assert all(p.startswith(f"{caches}/compile/") for folders in given.values() for p in folders.values()), given
    assert any(Path(given["server"]["VLLM_CACHE_ROOT"]).parent.rglob("*")), given  # the server's key folder
    assert not any((IMAGE / str(caches).lstrip("/")).iterdir())
    print(f"\nMEASURED container smoke job (3 steps) {seconds:.0f} s; processes seen: server {len(server)}, "
          f"trainer {len(trainer)}, supervisor {len(supervisor)}")

