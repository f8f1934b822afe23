"""Code frozen at submission: the user's own Python the job imports, copied into `<job>/code/` so that
editing files while the job waits in the queue, or between requeues, does not change what it runs.

What is frozen (found with `ast`, nothing imported: this runs on the login node): trainer.script, the
modules of reward.funcs that are files under the launch directory, and, transitively, every module those
files import that is a file under the launch directory (the script's own folder is searched first, as
Python does for a script). Files keep their path relative to the launch directory, so `code/` is
the launch directory's importable shape; a script outside it goes to `code/_outside/<name>`. Not frozen:
installed packages, the launcher itself, modules imported dynamically (importlib, __import__ with a
computed name), data files. In the job, launcher.train puts `code/` first on sys.path
(`activate`) and launcher.train.user_script runs the frozen script.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
from pathlib import Path
from typing import Iterable, Optional

from launcher.plan.user_code import CODE_DIR, frozen_name

MANIFEST = "frozen.txt"  # code/frozen.txt: one source path per line, what was copied
NEVER = {"launcher", "__future__"}  # the launcher is installed code, not the user's


def _module_files(dotted: str, roots: Iterable[Path]) -> list[Path]:
    """The files `import dotted` executes from the first root that has it: each package's __init__.py on the
    way, then the module (a.py); what follows a module is an attribute. [] when no root has it (installed)."""
    parts = dotted.split(".")
    if not parts[0] or parts[0] in NEVER or parts[0] in sys.stdlib_module_names:
        return []
    for root in roots:
        files, here = [], root
        for part in parts:
            if (here / f"{part}.py").is_file() and not (here / part / "__init__.py").is_file():
                files.append(here / f"{part}.py")
                break
            if not (here / part).is_dir():
                break
            here = here / part
            if (here / "__init__.py").is_file():
                files.append(here / "__init__.py")
        if files:
            return files
    return []


def _imports(path: Path, root: Path) -> list[str]:
    """Dotted names the file imports (relative imports resolved against its package under root)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return []
    try:
        package = list(path.parent.relative_to(root).parts)
    except ValueError:
        package = []
    if path.name != "__init__.py" and path.parent == root:
        package = []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            if node.level > len(package) + 1:
                continue
            stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if stem:
                names.append(stem)
            names += [f"{stem}.{a.name}" if stem else a.name for a in node.names if a.name != "*"]
    return names


def _under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return "site-packages" not in path.parts and "dist-packages" not in path.parts


def find_user_code(launch_dir: str, script: Optional[str] = None, modules: Iterable[str] = ()) -> list[Path]:
    """Every file to freeze: the script (if any), the given modules' files and all they import, transitively,
    limited to files under launch_dir. Sorted, no duplicates."""
    root = Path(os.path.abspath(launch_dir))
    todo: list[Path] = []
    script_dir: Optional[Path] = None
    if script:
        path = Path(os.path.abspath(os.path.expanduser(script)))
        todo.append(path)
        script_dir = path.parent
    for dotted in modules:
        todo += _module_files(dotted, [root])
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        roots = [r for r in (script_dir if path.parent == script_dir else None, root) if r is not None]
        for dotted in _imports(path, root):
            todo += [f for f in _module_files(dotted, roots) if _under(f, root) and f not in seen]
    return sorted(seen)


def reward_modules(funcs: Iterable[str]) -> list[str]:
    """The module part of each reward import path (`pkg.mod.func` -> `pkg.mod`)."""
    return [f.rsplit(".", 1)[0] for f in funcs if "." in f]


def freeze(job_dir: Path, launch_dir: str, script: Optional[str], funcs: Iterable[str]) -> list[Path]:
    """Copy the user's code into <job_dir>/code/ (see the module docstring); returns the sources copied.
    Nothing to freeze: no code/ folder."""
    files = find_user_code(launch_dir, script, reward_modules(funcs))
    if not files:
        return []
    code = Path(job_dir) / CODE_DIR
    for src in files:
        dst = code / frozen_name(str(src), launch_dir)
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(src, dst)
    (code / MANIFEST).write_text("".join(f"{p}\n" for p in files))
    return files


def activate(job_dir: Path) -> Optional[Path]:
    """Put <job_dir>/code first on sys.path (before the launch directory python adds): the frozen copies are
    what `import` finds. None when the job froze nothing."""
    code = Path(job_dir) / CODE_DIR
    if not code.is_dir():
        return None
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))
    return code
