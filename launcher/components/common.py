"""What both step wrappers share: the device decided once for this node and passed on in LAUNCHER_DEVICE,
USR2 left to the supervisor, and the exec that turns the wrapper into its component.
"""

from __future__ import annotations

import os
import signal
from typing import Mapping

from launcher.node import DEVICE_ENV, resolve_device
from launcher.plan.plan import Plan


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
    """Say what runs, then exec it (signals then reach the component directly)."""
    print(f"{who}: exec {' '.join(argv)}", flush=True)
    ignore_stray_usr2()
    os.execvpe(argv[0], argv, dict(env))
