"""What the job's Python can import, for validation: the top-level modules of the reward functions, looked
up with `importlib.util.find_spec` (which finds a module without running it) by the interpreter the nodes
run (`cluster.python`, else the launcher's own), with the PYTHONPATH the job gets from cluster.env and
trainer.env. Nothing is imported here: `trl.rewards.accuracy_reward` is looked up as `trl`, never loaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Optional

from launcher.config.schema import LaunchConfig

# run by the job's interpreter: which of argv[1:] it can find (sys.path[0] is the working directory, as for
# the trainer's `python -m` in the job)
PROBE = ("import importlib.util, json, sys; "
         "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))")
PROBE_TIMEOUT_S = 30.0


def top_level_modules(funcs: list[str]) -> list[str]:
    """`trl.rewards.accuracy_reward` -> `trl`; each module once, in order."""
    modules: list[str] = []
    for func in funcs:
        top = str(func).split(".")[0]
        if top.isidentifier() and top not in modules:
            modules.append(top)
    return modules


def job_pythonpath(cfg: LaunchConfig, environ: dict[str, str]) -> Optional[str]:
    """The trainer's PYTHONPATH in the job: trainer.env's, else cluster.env's, else the submitting shell's
    (sbatch exports it); None when none is set."""
    return cfg.trainer.env.get("PYTHONPATH") or cfg.cluster.env.get("PYTHONPATH") or environ.get("PYTHONPATH")


def _same_interpreter(python: str) -> bool:
    """The launcher's own interpreter, by path: a venv's python is a link to the same binary, but its
    pyvenv.cfg gives it other packages."""
    return os.path.abspath(os.path.expanduser(python)) == os.path.abspath(sys.executable)


def find_modules(python: str, modules: list[str], pythonpath: Optional[str]) -> Optional[dict[str, bool]]:
    """{module: found} as `python` sees it; None when it cannot be asked (not here, failed, timed out)."""
    if not modules:
        return {}
    if _same_interpreter(python) and pythonpath == os.environ.get("PYTHONPATH"):
        return {m: importlib.util.find_spec(m) is not None for m in modules}
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    try:
        out = subprocess.run([os.path.expanduser(python), "-c", PROBE, *modules], capture_output=True, text=True,
                             timeout=PROBE_TIMEOUT_S, env=env)
        found = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None
    return {m: bool(found.get(m)) for m in modules} if isinstance(found, dict) else None


def reward_module_facts(cfg: LaunchConfig) -> tuple[str, Optional[dict[str, bool]]]:
    """(the job's interpreter, {top-level module of each reward function: found}) for the rules."""
    python = cfg.cluster.python or sys.executable
    return python, find_modules(python, top_level_modules(list(cfg.reward.funcs)), job_pythonpath(cfg, dict(os.environ)))
