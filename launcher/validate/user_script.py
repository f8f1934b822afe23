"""Rules on trainer.script (your own training script) and trainer.script_args, before anything is queued:
the script must be a Python file that exists here and parses (`ast`, nothing imported or run)."""

from __future__ import annotations

import ast
import os

from launcher.config.schema import LaunchConfig
from launcher.validate.problems import Facts, Problem

KEY = "trainer.script"


def script_problem(script: object) -> str | None:
    """Why `script` cannot be the trainer (None: it can)."""
    if not isinstance(script, str) or not script.strip():
        return "must be the path of a Python training script"
    path = os.path.expanduser(script)
    if not os.path.exists(path):
        return f"{script} does not exist (relative paths are from the launch directory, {os.getcwd()})"
    if not os.path.isfile(path):
        return f"{script} is not a file"
    try:
        with open(path, "rb") as f:
            ast.parse(f.read(), filename=path)
    except SyntaxError as e:
        return f"{script} is not Python: line {e.lineno}: {e.msg}"
    except (OSError, ValueError) as e:
        return f"{script} cannot be read as Python: {e}"
    return None


def check_user_script(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    t = cfg.trainer
    if getattr(t, "script", None) is None:
        if getattr(t, "script_args", None):
            return [Problem(("trainer.script_args",), "is set but trainer.script is not: set the script too")]
        return []
    why = script_problem(t.script)
    problems = [Problem((KEY,), why)] if why else []
    if t.preflight:
        problems.append(Problem((KEY, "trainer.preflight"), "the preflight runs the launcher's own check, not your "
                                "script: the script is ignored while trainer.preflight=true", severity="warning"))
    return problems
