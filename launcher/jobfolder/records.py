"""The supervisor's records in an attempt folder, typed: how the attempt ended (result.json), what it
is doing (status.json), where the server listens (server.json) and the handover to the trainer
(server_ready.json). States and causes are enums.

Readers return None for a missing or unreadable file and accept files written by older launchers
(bare strings, no `provisional` field). Standard library only: the jobs CLI reads these on the login node.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from launcher.jobfolder.jsonio import PathLike, read_json, write_json_atomic
from launcher.jobfolder.names import RESULT, SERVER, SERVER_READY, STATUS


class State(str, enum.Enum):
    """How an attempt ended."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REQUEUED = "REQUEUED"  # the job runs again (by the supervisor's `scontrol requeue`, or by Slurm)
    STOPPED = "STOPPED"  # cancelled, or interrupted by hand


class Cause(str, enum.Enum):
    """What ended an attempt (docs/faults.md has a row for each)."""

    FINISHED = "finished"
    TRAINER_FAILED = "trainer_failed"
    SERVER_FAILED = "server_failed"
    HANG = "hang"
    WALLTIME = "walltime"
    PREEMPTION = "preemption"
    REQUEUE = "requeue"
    NODE_FAILURE = "node_failure"
    CANCEL = "cancel"
    MAX_REQUEUES = "max_requeues"
    START_FAILED = "start_failed"
    SUPERVISOR_ERROR = "supervisor_error"  # an unexpected exception in the supervisor itself
    UNKNOWN = "unknown"  # a cause this reader does not know (a newer launcher wrote it)


class Phase(str, enum.Enum):
    """The supervisor's phase (status.json)."""

    SERVER_STARTING = "server_starting"
    TRAINER_RUNNING = "trainer_running"
    FINISHED = "finished"


def _enum(kind: type[enum.Enum], value: Any, default: Any) -> Any:
    try:
        return kind(value)
    except ValueError:
        return default


@dataclass
class Result:
    """result.json: how the attempt ended. `provisional` marks the record written the moment Slurm's
    SIGTERM arrives (before the supervisor knows why); the final record replaces it."""

    state: State
    reason: str  # first line: the summary; further lines: the failing component's log tail
    cause: Cause
    trainer_rc: Optional[int] = None
    server_rc: Optional[int] = None
    attempt: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    continues: bool = False  # the job runs again (REQUEUED): no submitit result may be left
    provisional: bool = False

    @property
    def summary(self) -> str:
        return self.reason.splitlines()[0] if self.reason else ""

    def to_json(self) -> dict:
        data = asdict(self)
        data["state"], data["cause"] = self.state.value, self.cause.value
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Result":
        reason = str(data.get("reason") or "")
        return cls(state=_enum(State, data.get("state"), State.FAILED), reason=reason,
                   cause=_enum(Cause, data.get("cause") or "unknown", Cause.UNKNOWN),
                   trainer_rc=data.get("trainer_rc"), server_rc=data.get("server_rc"),
                   attempt=int(data.get("attempt") or 1), timings=dict(data.get("timings") or {}),
                   continues=bool(data.get("continues")),
                   # launchers before the field said so in the reason
                   provisional=bool(data.get("provisional", "deciding why" in reason)))


def write_result(attempt_dir: PathLike, result: Result) -> None:
    write_json_atomic(Path(attempt_dir) / RESULT, result.to_json(), durable=True)


def read_result(attempt_dir: PathLike) -> Optional[Result]:
    data = read_json(Path(attempt_dir) / RESULT)
    return Result.from_json(data) if isinstance(data, dict) and data.get("state") else None


@dataclass
class Status:
    """status.json: the supervisor's phase, since when, and what it knows so far."""

    phase: Phase
    since: float
    attempt: int
    server_url: Optional[str] = None
    state: Optional[State] = None  # once finished
    reason: Optional[str] = None  # once finished: the result's summary

    def to_json(self) -> dict:
        data = asdict(self)
        data["phase"] = self.phase.value
        data["state"] = self.state.value if self.state else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Status":
        state = data.get("state")
        return cls(phase=_enum(Phase, data.get("phase"), Phase.SERVER_STARTING), since=float(data.get("since") or 0),
                   attempt=int(data.get("attempt") or 1), server_url=data.get("server_url"),
                   state=_enum(State, state, None) if state else None, reason=data.get("reason"))


def write_status(attempt_dir: PathLike, status: Status) -> None:
    write_json_atomic(Path(attempt_dir) / STATUS, status.to_json())


def read_status(attempt_dir: PathLike) -> Optional[Status]:
    data = read_json(Path(attempt_dir) / STATUS)
    return Status.from_json(data) if isinstance(data, dict) and data.get("phase") else None


@dataclass
class ServerAddress:
    """server.json: published by the server wrapper before it execs vLLM."""

    host: str  # the node's name
    address: str  # the address it binds and others dial
    port: int
    pid: int
    started_at: str
    url: str = ""

    def __post_init__(self) -> None:
        if not self.url:
            host = f"[{self.address}]" if ":" in self.address else self.address
            self.url = f"http://{host}:{self.port}"

    @classmethod
    def from_json(cls, data: dict) -> "ServerAddress":
        return cls(host=str(data.get("host", "")), address=str(data["address"]), port=int(data["port"]),
                   pid=int(data.get("pid") or 0), started_at=str(data.get("started_at", "")),
                   url=str(data.get("url") or ""))


def write_server(attempt_dir: PathLike, server: ServerAddress) -> None:
    write_json_atomic(Path(attempt_dir) / SERVER, asdict(server))


def read_server(attempt_dir: PathLike) -> Optional[ServerAddress]:
    data = read_json(Path(attempt_dir) / SERVER)
    try:
        return ServerAddress.from_json(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class ServerReady:
    """server_ready.json: the handover of the overlapped start. The supervisor writes it (atomically) once
    `GET <url>/health` answered 200; the trainer, started with the server and prepared meanwhile, waits for
    it (every rank reads it: no collective is pending during a long server start), then connects."""

    url: str
    host: str  # the server's node
    healthy_after_s: float  # since the attempt began
    time: float  # epoch seconds of the handover

    @classmethod
    def from_json(cls, data: dict) -> "ServerReady":
        return cls(url=str(data["url"]), host=str(data.get("host", "")),
                   healthy_after_s=float(data.get("healthy_after_s") or 0.0), time=float(data.get("time") or 0.0))


def write_server_ready(attempt_dir: PathLike, ready: ServerReady) -> None:
    write_json_atomic(Path(attempt_dir) / SERVER_READY, asdict(ready))


def read_server_ready(attempt_dir: PathLike) -> Optional[ServerReady]:
    data = read_json(Path(attempt_dir) / SERVER_READY)
    try:
        return ServerReady.from_json(data) if isinstance(data, dict) and data.get("url") else None
    except (KeyError, TypeError, ValueError):
        return None
