"""What both step wrappers share: the device decided once for this node and passed on in LAUNCHER_DEVICE,
the node's hygiene and its record (CPUs seen, threads, address: attempt-N/node-<component>-<host>.json),
USR2 left to the supervisor, and the exec that turns the wrapper into its component.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any, Mapping, Optional

from launcher.components.hygiene import prepare_node
from launcher.jobfolder.jsonio import write_json_atomic
from launcher.jobfolder.names import COMPONENT_ENV, PLAN, node_record
from launcher.node import DEVICE_ENV, cpus_seen, resolve_device
from launcher.plan.plan import Plan


def launched_at(job_dir: Path) -> Optional[float]:
    """When the job was launched (plan.json's time): shared-memory files older than that are not this job's."""
    try:
        return (Path(job_dir) / PLAN).stat().st_mtime
    except OSError:
        return None


def node_setup(plan: Plan, name: str, env: dict[str, str], job_dir: Path) -> dict[str, Any]:
    """The hygiene (launcher.components.hygiene) and what this step sees: the start of its node record."""
    component = plan.component(name)
    planned = component.resources.cpus if component is not None and component.resources is not None else None
    record: dict[str, Any] = {
        "component": name, "host": socket.gethostname(), "node_rank": int(env.get("SLURM_NODEID", "0") or 0),
        "cpus_seen": cpus_seen(), "cpus_planned": planned, "cpus_on_node": env.get("SLURM_CPUS_ON_NODE"),
    }
    earlier_attempts = int(env.get("LAUNCHER_ATTEMPT", "1") or 1) > 1
    record.update(prepare_node(env, launched_at(job_dir) if earlier_attempts else None))
    return record


def describe_node(record: dict[str, Any]) -> str:
    """One line for the component's log (stderr): CPUs seen and planned, open files, shared memory cleaned."""
    planned = f" ({record['cpus_planned']} planned)" if record.get("cpus_planned") else ""
    files = record["open_files"]
    return (f"{record['cpus_seen']} CPUs here{planned}, open files {files['before']} -> {files['after']}, "
            f"stale shared-memory files removed: {len(record['stale_shm_removed'])}")


def write_node_record(attempt_dir: Path, record: dict[str, Any]) -> None:
    """attempt-N/node-<component>-<host>.json (a record only; nothing reads it back in the job)."""
    write_json_atomic(Path(attempt_dir) / node_record(record["component"], record["host"]), record)


def decide_device(plan: Plan, env: dict[str, str]) -> str:
    """plan.device on this node ("auto": cuda when launcher.node.gpu_count() > 0, else cpu), written
    into `env` as LAUNCHER_DEVICE for what the wrapper execs; nothing after it probes again."""
    device = resolve_device(plan.device)
    env[DEVICE_ENV] = device
    return device


def ignore_stray_usr2() -> None:
    """USR2 belongs to the supervisor (walltime/preemption -> checkpoint -> requeue). A USR2 sent to
    every step (`--signal=USR2@N` without B:, `scancel --signal=USR2` without --batch) would kill a
    process that does not handle it; an ignored signal stays ignored across exec and fork."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def become(who: str, argv: list[str], env: Mapping[str, str]) -> None:
    """Say what runs, then exec it (signals then reach the component directly). LAUNCHER_COMPONENT names
    it for every process it starts (their stack files, launcher/faulthandlers.py)."""
    print(f"{who}: exec {' '.join(argv)}", flush=True)
    ignore_stray_usr2()
    os.execvpe(argv[0], argv, {**env, COMPONENT_ENV: who})
