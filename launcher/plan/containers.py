"""Each component's container: what the plan carries (Container, pure data), the per-field merge of
cluster.container with server.container / trainer.container, and `wrap()`, the pure function that renders
a component's step argv inside its image for each runtime (used by the supervisor's srun steps and by the
local backend). The supervisor itself always stays on the host.

What every runtime is given: the job root bound at its own path (LAUNCHER_JOB_DIR means the same inside),
the Hugging Face cache and the compile caches (cluster.hf_home, cluster.cache_dir: shared_folders) bound at
their own paths too (what one attempt compiles the next finds), the host network (the server's address is
the node's: pyxis, apptainer and ch-run do not make a network namespace), the host environment (LAUNCHER_*, VLLM_HOST_IP, SLURM_*, CUDA_VISIBLE_DEVICES; pyxis is told the
names with --container-env so that they win over the image's own ENV), and the GPUs as the runtime needs
them (pyxis: none, the GPUs are Slurm's; apptainer/singularity: --nv; charliecloud: none at run time, the
image is prepared once with `ch-fromhost --nvidia`). docs/containers.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from launcher.config.schema import ContainerConfig, ContainerRuntime

RUNTIMES = tuple(r.value for r in ContainerRuntime if r is not ContainerRuntime.none)

# what the launcher itself exports to the component steps; pyxis hands these to the container by name
PASSTHROUGH_ENV = ("LAUNCHER_JOB_DIR", "LAUNCHER_ATTEMPT_DIR", "LAUNCHER_DEVICE", "LAUNCHER_SERVER_URL",
                   "LAUNCHER_BACKEND", "VLLM_HOST_IP", "CUDA_VISIBLE_DEVICES")


@dataclass(frozen=True)
class Container:
    runtime: str  # a ContainerRuntime value other than "none"
    image: str
    mounts: list[str] = field(default_factory=list)  # "src:dst[:opts]"
    workdir: Optional[str] = None
    flags: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)  # further names passed by name (pyxis: --container-env)
    job_root: Optional[str] = None  # cluster.job_root, absolute: bound at its own path (the job folder is in it)


def merged(cluster: ContainerConfig, own: ContainerConfig) -> ContainerConfig:
    """A component's container settings: its own keys where set, the cluster's where null."""
    values: dict[str, Any] = {}
    for name in ("runtime", "image", "mounts", "workdir", "flags", "env"):
        mine = getattr(own, name)
        values[name] = mine if mine is not None else getattr(cluster, name)
    return ContainerConfig(**values)


def container_of(cluster: ContainerConfig, own: ContainerConfig, job_root: Optional[str] = None) -> Optional[Container]:
    """The plan's Container of one component (None: it runs on the host); `job_root` absolute."""
    c = merged(cluster, own)
    runtime = ContainerRuntime(c.runtime) if c.runtime is not None else ContainerRuntime.none
    if runtime is ContainerRuntime.none:
        return None
    return Container(runtime=runtime.value, image=str(c.image), mounts=[str(m) for m in c.mounts or []],
                     workdir=c.workdir, flags=[str(f) for f in c.flags or []], env=[str(e) for e in c.env or []],
                     job_root=job_root)


def from_dict(data: Optional[dict[str, Any]]) -> Optional[Container]:
    return Container(**data) if data else None


def shared_folders(plan: Any) -> list[str]:
    """The host folders every contained step gets bound at their own path besides the job root: the Hugging
    Face cache the job reads (plan.hf_home) and the compile caches (plan.cache_dir, launcher.components.caches),
    absolute. One under the job root (cache_dir's default) is covered by the job root's bind."""
    found = [getattr(plan, "hf_home", None), getattr(plan, "cache_dir", None)]
    return list(dict.fromkeys(os.path.abspath(os.path.expanduser(str(p))) for p in found if p))


def _covered(path: str, mounts: list[str]) -> bool:
    """A mount already binds `path`, or a folder above it, at its own path."""
    for mount in mounts:
        src, _, rest = mount.partition(":")
        dst = rest.split(":")[0] or src
        if src == dst and (path == src or path.startswith(src.rstrip("/") + "/")):
            return True
    return False


def _mounts(container: Container, same_paths: Sequence[str]) -> list[str]:
    mounts = list(container.mounts)
    for path in same_paths:
        if path and not _covered(path, mounts) and not any(m.split(":")[0] == path for m in mounts):
            mounts.append(f"{path}:{path}")
    return mounts


def wrap(container: Optional[Container], argv: list[str], uses_gpus: bool,
         job_dir: Optional[str] = None, shared: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(extra srun flags, the argv the step runs) for `argv` inside `container` (None: unchanged).
    The container's job root (else `job_dir`) and the `shared` host folders (absolute: shared_folders, the
    Hugging Face cache the job reads and the compile caches) are bound at their own paths unless a mount
    already has them as its source."""
    if container is None:
        return [], list(argv)
    mounts = _mounts(container, [p for p in (container.job_root or job_dir, *shared) if p])
    runtime = container.runtime
    if runtime == ContainerRuntime.pyxis.value:
        flags = [f"--container-image={container.image}"]
        if mounts:
            flags.append(f"--container-mounts={','.join(mounts)}")
        if container.workdir:
            flags.append(f"--container-workdir={container.workdir}")
        names = list(dict.fromkeys([*PASSTHROUGH_ENV, *container.env]))
        flags.append(f"--container-env={','.join(names)}")
        return flags + list(container.flags), list(argv)
    if runtime in (ContainerRuntime.apptainer.value, ContainerRuntime.singularity.value):
        out = [runtime, "exec"]
        if uses_gpus:
            out.append("--nv")
        for mount in mounts:
            out += ["--bind", mount]
        if container.workdir:
            out += ["--pwd", container.workdir]
        return [], out + list(container.flags) + [container.image, *argv]
    if runtime == ContainerRuntime.charliecloud.value:
        out = ["ch-run"]
        for mount in mounts:
            out += ["-b", mount]
        if container.workdir:
            out += ["-c", container.workdir]
        return [], out + list(container.flags) + [container.image, "--", *argv]
    raise ValueError(f"unknown container runtime {runtime!r}")


def describe(container: Optional[Container]) -> str:
    """One line for plan.txt: the runtime, image, mounts and workdir (or 'the host')."""
    if container is None:
        return "the host (no container)"
    parts = [f"{container.runtime} {container.image}"]
    if container.mounts:
        parts.append(f"mounts {', '.join(container.mounts)}")
    if container.workdir:
        parts.append(f"workdir {container.workdir}")
    if container.flags:
        parts.append(f"flags {' '.join(container.flags)}")
    parts.append(f"+ the job root {container.job_root}" if container.job_root else "+ the job folder")
    parts[-1] += ", the Hugging Face cache and the compile caches"
    return "; ".join(parts)
