"""Job states from sacct/squeue, with heterogeneous components aggregated.

sacct prints a het job's components as `ID+0`, `ID+1` (steps as `ID+0.batch`, `ID+1.0`) and, for
a second or two after a short het job ends, sometimes a plain `ID` row. A job's state is the worst
of its components: any failed component means the job failed.
"""

from __future__ import annotations

import re
import subprocess
from typing import Iterable, Optional

FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                 "PREEMPTED", "REVOKED"}
ACTIVE_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
WAITING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD"}
FINISHED_STATES = FAILED_STATES | {"COMPLETED"}

_ID = re.compile(r"^(?P<job>\d+)(?:\+(?P<component>\d+))?$")

# the order in which one component's state decides the whole job's
_PRIORITY = ["NODE_FAIL", "OUT_OF_MEMORY", "FAILED", "TIMEOUT", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "CANCELLED",
             "REVOKED", "RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED", "RESIZING",
             "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PENDING", "RESV_DEL_HOLD", "COMPLETED"]


def base_state(raw: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED'."""
    return raw.split()[0] if raw.strip() else "UNKNOWN"


def combine(states: Iterable[str]) -> str:
    states = [base_state(s) for s in states]
    if not states:
        return "UNKNOWN"
    failed = [s for s in states if s in FAILED_STATES]
    if failed and any(s in ACTIVE_STATES for s in states):
        # one component died, the other still runs: the job is failing; say so now
        return min(failed, key=_rank)
    return min(states, key=_rank)


def _rank(state: str) -> int:
    return _PRIORITY.index(state) if state in _PRIORITY else len(_PRIORITY)


def parse_sacct(text: str) -> dict[str, dict[str, str]]:
    """`sacct -X? -o JobID,State,... --parsable2` -> {job id: {"State": aggregated, "components": {...}, ...}}.

    Step rows (with a dot) are ignored. For a het job, the `+N` rows win over a plain row."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    names = lines[0].split("|")
    components: dict[str, dict[str, dict[str, str]]] = {}
    plain: dict[str, dict[str, str]] = {}
    for line in lines[1:]:
        row = dict(zip(names, line.split("|")))
        match = _ID.match(row.get("JobID", ""))
        if not match:
            continue  # steps (ID.batch, ID+1.0) and array syntax
        job = match.group("job")
        if match.group("component") is None:
            plain[job] = row
        else:
            components.setdefault(job, {})[match.group("component")] = row
    info: dict[str, dict[str, str]] = {}
    for job, row in plain.items():
        info[job] = dict(row, State=base_state(row.get("State", "")))
    for job, parts in components.items():
        first = parts[min(parts, key=int)]
        info[job] = dict(first, JobID=job, State=combine(r.get("State", "") for r in parts.values()))
        info[job]["components"] = {k: base_state(v.get("State", "")) for k, v in sorted(parts.items())}  # type: ignore[assignment]
    return info


def parse_squeue(text: str) -> dict[str, str]:
    """`squeue -h -o '%i|%T'` -> {job id: state}; het components aggregated the same way."""
    states: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        job_id, state = line.split("|", 1)
        match = _ID.match(job_id.strip())
        if match:
            states.setdefault(match.group("job"), []).append(state.strip())
    return {job: combine(s) for job, s in states.items()}


SACCT_FIELDS = "JobID,JobName,State,ExitCode,NodeList,Elapsed,Start,End"


def sacct_command(job_ids: Iterable[str]) -> list[str]:
    ids = sorted({str(j).split("+")[0] for j in job_ids}, key=int)
    return ["sacct", "-o", SACCT_FIELDS, "--parsable2", "-j", ",".join(ids)]


def query_states(job_ids: Iterable[str], timeout_s: float = 60) -> dict[str, dict[str, str]]:
    """All jobs' states in ONE sacct call (and one squeue call for jobs sacct does not list yet)."""
    ids = [str(j) for j in job_ids]
    if not ids:
        return {}
    info: dict[str, dict[str, str]] = {}
    out = subprocess.run(sacct_command(ids), capture_output=True, text=True, timeout=timeout_s)
    if out.returncode == 0:
        info = parse_sacct(out.stdout)
    missing = [j for j in ids if j not in info]
    if missing:
        out = subprocess.run(["squeue", "-h", "-o", "%i|%T", "-j", ",".join(missing)],
                             capture_output=True, text=True, timeout=timeout_s)
        if out.returncode == 0:
            for job, state in parse_squeue(out.stdout).items():
                info[job] = {"JobID": job, "State": state}
    return info


def state_of(info: Optional[dict]) -> str:
    return info.get("State", "UNKNOWN") if info else "UNKNOWN"
