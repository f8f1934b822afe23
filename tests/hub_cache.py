"""A Hugging Face hub cache built locally in the hub's own layout (what `huggingface_hub.snapshot_download`
leaves behind), for the offline tests: nothing here touches a network.

    <hub>/models--<org>--<name>/refs/main              the commit the branch points at
    <hub>/models--<org>--<name>/blobs/<sha256>         each file's content, once
    <hub>/models--<org>--<name>/snapshots/<commit>/f   a relative symlink to ../../blobs/<sha256>
    <hub>/datasets--<org>--<name>/...                  the same for a dataset repo
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def repo_folder(hub: Path, repo_type: str, repo_id: str) -> Path:
    return Path(hub) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def commit_of(repo_id: str, files: dict[str, bytes]) -> str:
    """A stable 40-hex commit id for the repo's content (what the hub's git commit would be)."""
    digest = hashlib.sha1(repo_id.encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name])
    return digest.hexdigest()


def add_repo(hub: Path, repo_type: str, repo_id: str, files: dict[str, bytes], ref: str = "main") -> str:
    """Put `files` (path in the repo -> content) into the cache as one commit that `ref` points at; the commit."""
    root = repo_folder(hub, repo_type, repo_id)
    commit = commit_of(repo_id, files)
    for name, content in files.items():
        blob = root / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return commit


def add_folder(hub: Path, repo_type: str, repo_id: str, folder: Path, ref: str = "main") -> str:
    """Every file under `folder` as one commit of repo_id."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return add_repo(hub, repo_type, repo_id, files, ref)
