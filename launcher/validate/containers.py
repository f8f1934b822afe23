"""Rules on cluster.container and server/trainer.container, checked per component on the merged settings and
naming the key the value came from (the component's own, else the cluster's):

- a runtime without an image; an image that looks like a local path (absolute or relative, a .sif, .sqsh,
  .squashfs, .sqfs file, or any charliecloud image) and does not exist here (a shared filesystem is assumed,
  as for the job root); pyxis/apptainer URIs (docker://, library://, oras://, nvcr.io#...) are not checked;
- a mount that is not "src:dst[:opts]" with both sides (charliecloud's ch-run takes no options), a workdir or
  mount target that is not absolute, env names that are not variable names;
- runtime flags that would cut the step off from the job (apptainer --cleanenv/--containall/--net, ch-run
  --unset-env): the launcher's variables and the node's address must reach the process inside;
- a read-only charliecloud directory image without a folder at a bind target (a mount's, the job root's,
  the Hugging Face cache's, cluster.cache_dir's outside the job root): ch-run 0.31 makes them only in a
  writable image (-w); a target under /tmp is the node's own /tmp, which ch-run binds over the image's
  (unless -t/--private-tmp); and a warning when no
  cluster.hf_home (nor a bind or variable) gives the job a writable Hugging Face cache in such an image;
- the runtime's executable: on the local backend it must be on PATH here (error), and pyxis needs srun (error);
  on Slurm apptainer/singularity/ch-run run on the compute nodes, so one missing here is a warning; pyxis is
  an srun plugin of the nodes and is not checked on the login node.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Optional

from launcher.config.schema import Backend, ContainerConfig, ContainerRuntime, LaunchConfig, Mode
from launcher.validate.problems import Facts, Problem

EXECUTABLES = {ContainerRuntime.apptainer: "apptainer", ContainerRuntime.singularity: "singularity",
               ContainerRuntime.charliecloud: "ch-run"}
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|#")  # docker://..., library://..., nvcr.io#nvidia/pytorch:24.01
LOCAL_SUFFIXES = (".sif", ".sqsh", ".squashfs", ".sqfs", ".img")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CUTTING_FLAGS = {
    ContainerRuntime.apptainer: ("--cleanenv", "-e", "--containall", "-C", "--net", "-n", "--network"),
    ContainerRuntime.singularity: ("--cleanenv", "-e", "--containall", "-C", "--net", "-n", "--network"),
    ContainerRuntime.charliecloud: ("--unset-env",),
}
FIELDS = ("runtime", "image", "mounts", "workdir", "flags", "env")


def _sources(cluster: ContainerConfig, own: ContainerConfig, component: str) -> dict[str, str]:
    """Each key -> the config key its value comes from (unset in both: the component's own key when the
    component chose its runtime itself)."""
    own_runtime = own.runtime is not None

    def source(name: str) -> str:
        mine, theirs = getattr(own, name) is not None, getattr(cluster, name) is not None
        return f"{component}.container.{name}" if mine or (own_runtime and not theirs) else f"cluster.container.{name}"

    return {name: source(name) for name in FIELDS}


def _value(cluster: ContainerConfig, own: ContainerConfig, name: str):
    mine = getattr(own, name)
    return mine if mine is not None else getattr(cluster, name)


def image_is_local(runtime: ContainerRuntime, image: str) -> bool:
    if URI.search(image):
        return False
    return (runtime is ContainerRuntime.charliecloud or image.startswith(("/", "./", "../", "~"))
            or image.endswith(LOCAL_SUFFIXES))


def mount_problem(mount: str, runtime: ContainerRuntime) -> Optional[str]:
    parts = str(mount).split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return f"{mount!r} has no target: write src:dst (or src:dst:ro)"
    if len(parts) > 3:
        return f"{mount!r}: a path with ':' cannot be mounted (src:dst[:opts])"
    if not parts[1].startswith("/"):
        return f"{mount!r}: the target {parts[1]!r} must be an absolute path inside the image"
    if len(parts) == 3 and runtime is ContainerRuntime.charliecloud:
        return f"{mount!r}: ch-run takes no mount options (write src:dst)"
    return None


def _component(cfg: LaunchConfig, component: str, own: ContainerConfig) -> list[Problem]:
    cluster = cfg.cluster.container
    key = _sources(cluster, own, component)
    raw = _value(cluster, own, "runtime")
    runtime = ContainerRuntime(raw) if raw is not None else ContainerRuntime.none
    if runtime is ContainerRuntime.none:
        return []
    problems = []
    image = _value(cluster, own, "image")
    if not image:
        problems.append(Problem((key["image"],), f"the {runtime.value} runtime needs an image"))
    elif image_is_local(runtime, str(image)) and not os.path.exists(os.path.expanduser(str(image))):
        problems.append(Problem((key["image"],), f"image {image} does not exist (a local image must be "
                                                 "on the filesystem the nodes share)"))
    for mount in _value(cluster, own, "mounts") or []:
        reason = mount_problem(str(mount), runtime)
        if reason:
            problems.append(Problem((key["mounts"],), reason))
    workdir = _value(cluster, own, "workdir")
    if workdir is not None and not str(workdir).startswith("/"):
        problems.append(Problem((key["workdir"],), f"{workdir!r} must be an absolute path inside the image"))
    for name in _value(cluster, own, "env") or []:
        if not ENV_NAME.match(str(name)):
            problems.append(Problem((key["env"],), f"{name!r} is not an environment variable name"))
    cutting = [f for f in _value(cluster, own, "flags") or [] if str(f).split("=")[0] in CUTTING_FLAGS.get(runtime, ())]
    if cutting:
        problems.append(Problem((key["flags"],), f"{' '.join(cutting)} would keep the launcher's environment or the "
                                                 "node's network from the process in the image; remove it"))
    if runtime is ContainerRuntime.charliecloud and image and os.path.isdir(os.path.expanduser(str(image))):
        problems += _charliecloud_targets(cfg, str(image), key, _value(cluster, own, "mounts") or [],
                                          _value(cluster, own, "flags") or [])
        problems += _charliecloud_hf_cache(cfg, _value(cluster, own, "mounts") or [], _value(cluster, own, "flags") or [])
    problems += _executable(cfg, runtime, key["runtime"])
    return problems


def _charliecloud_targets(cfg: LaunchConfig, image: str, key: dict[str, str], mounts: list, flags: list) -> list[Problem]:
    """ch-run binds only onto folders the image has unless it is mounted writable (-w): the mount targets,
    the job root, the Hugging Face cache and a cache_dir outside the job root must exist in a read-only
    directory image."""
    if any(str(f) in ("-w", "--write") for f in flags):
        return []
    targets = [(key["mounts"], str(m).split(":")[1]) for m in mounts if len(str(m).split(":")) >= 2]
    job_root = os.path.realpath(os.path.expanduser(str(cfg.cluster.job_root)))
    targets.append(("cluster.job_root", job_root))
    if cfg.cluster.hf_home:
        targets.append(("cluster.hf_home", os.path.abspath(os.path.expanduser(str(cfg.cluster.hf_home)))))
    if cfg.cluster.cache_dir:  # the compile caches, bound at their own path unless under the job root
        cache_dir = os.path.realpath(os.path.expanduser(str(cfg.cluster.cache_dir)))
        if not (cache_dir + "/").startswith(job_root.rstrip("/") + "/"):
            targets.append(("cluster.cache_dir", cache_dir))
    root = os.path.expanduser(image)
    # ch-run binds the node's /tmp over the image's unless -t/--private-tmp: a target under it is there
    shared_tmp = not any(str(f) in ("-t", "--private-tmp") for f in flags)
    return [Problem((k,), f"{target} is not a folder in the image {image}: ch-run cannot bind onto it in a "
                          f"read-only image (mkdir -p {root.rstrip('/')}{target}, or add -w to the flags)")
            for k, target in targets if target and not os.path.isdir(root.rstrip("/") + target)
            and not (shared_tmp and (target + "/").startswith("/tmp/"))]


def _charliecloud_hf_cache(cfg: LaunchConfig, mounts: list, flags: list) -> list[Problem]:
    """The trainer's datasets cache (and transformers') is written under HF_HOME; without cluster.hf_home that
    is $HOME/.cache/huggingface inside a read-only image (ch-run binds no $HOME): the job fails at load_dataset
    with 'Read-only file system'. A warning: a variable set elsewhere or a bind found here may cover it."""
    if cfg.cluster.hf_home or any(str(f) in ("-w", "--write", "--home") for f in flags):
        return []
    if any(name in (cfg.cluster.env or {}) for name in ("HF_HOME", "HF_DATASETS_CACHE")):
        return []
    default = os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    targets = [str(m).split(":")[1].rstrip("/") for m in mounts if len(str(m).split(":")) >= 2]
    if any(default == t or default.startswith(t + "/") for t in targets if t):
        return []
    return [Problem(("cluster.hf_home",), f"the job writes the Hugging Face cache (the datasets cache) under "
                                          f"{default}, read-only in a charliecloud image: set cluster.hf_home to a "
                                          "folder the nodes share (bound at its own path)", severity="warning")]


def _executable(cfg: LaunchConfig, runtime: ContainerRuntime, key: str) -> list[Problem]:
    local = cfg.cluster.backend == Backend.local
    if runtime is ContainerRuntime.pyxis:
        return [Problem((key,), "pyxis is an srun plugin: it needs the Slurm backend (cluster=slurm); "
                                "locally use apptainer or charliecloud")] if local else []
    exe = EXECUTABLES[runtime]
    if shutil.which(exe) is not None:
        return []
    if local:
        return [Problem((key,), f"{exe} is not on PATH on this machine, where cluster=local runs the components")]
    return [Problem((key,), f"{exe} is not on PATH on this login node (fine only if the compute nodes have it)",
                    severity="warning")]


def check_containers(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    problems = []
    if cfg.mode == Mode.server:
        problems += _component(cfg, "server", cfg.server.container)
    problems += _component(cfg, "trainer", cfg.trainer.container)
    unique: list[Problem] = []  # the cluster's own mistake is said once, not once per component
    for p in problems:
        if p not in unique:
            unique.append(p)
    return unique
