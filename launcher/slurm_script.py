"""The command the batch step execs: submitit's runner, which loads and runs the supervisor."""

from __future__ import annotations

from .plan import Plan


def supervisor_command(plan: Plan, submitit_folder: str) -> list[str]:
    return [plan.python, "-u", "-m", "submitit.core._submit", submitit_folder]
