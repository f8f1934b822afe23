"""Containers per component: the merge of cluster.container with server/trainer.container, the plan's
Container, the srun argv rendered for every runtime (golden files), and quoting through bash."""

import dataclasses
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import compose
from launcher.plan.build import build_plan
from launcher.plan.containers import PASSTHROUGH_ENV, Container, wrap
from launcher.plan.plan import Plan
from launcher.supervisor.steps import SlurmSteps
from launcher.validate.problems import Facts
from launcher.validate.rules import validate

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"  # regenerate after an intended change, then review the diff
FACTS = Facts(partitions={"gpu": {"gpus_per_node": 8, "nodes": 16, "max_time_s": None, "cpus_per_node": 96,
                                  "mem_mb_per_node": 1024000}}, default_partition="gpu")
JOB_DIR = "/shared/jobs/deepmath/20261128-120000-abcd"
ENV = {"LAUNCHER_JOB_DIR": JOB_DIR, "SLURM_JOB_CPUS_PER_NODE_HET_GROUP_0": "12",
       "SLURM_JOB_CPUS_PER_NODE_HET_GROUP_1": "24"}

IMAGES = {
    "pyxis": Container("pyxis", "/shared/images/grpo.sqsh", ["/shared/models:/models:ro", "/scratch:/scratch"],
                       "/workspace", ["--no-container-remap-root"], ["WANDB_PROJECT"]),
    "apptainer": Container("apptainer", "/shared/images/grpo.sif", ["/shared/models:/models:ro"], "/workspace",
                           ["--writable-tmpfs"]),
    "singularity": Container("singularity", "/shared/images/grpo.sif", ["/shared/models:/models"]),
    "charliecloud": Container("charliecloud", "/shared/images/grpo", ["/shared/models:/models"], "/workspace"),
}


def _plan(*overrides: str) -> Plan:
    cfg = compose("+experiment=deepmath", "cluster=slurm", "cluster.python=/opt/venv/bin/python",
                  "trainer.gpus_per_node=2", *overrides)
    return build_plan(cfg, FACTS)


def _with(plan: Plan, container, cache_dir=None) -> Plan:
    """The plan with `container` for both components; the compile caches at `cache_dir` (None: none, so that
    the binds a test looks at are the container's own and the job folder's)."""
    return dataclasses.replace(plan, cache_dir=cache_dir, components=[dataclasses.replace(c, container=container)
                                                                      for c in plan.components])


def rendered_steps(plan: Plan) -> str:
    steps = SlurmSteps(plan)
    return "".join(f"# {c.name}\n{shlex.join(steps.argv(c, ENV))}\n" for c in plan.components)


@pytest.mark.parametrize("runtime", sorted(IMAGES))
def test_golden_step_argv_per_runtime(runtime):
    # the compile caches on shared storage outside the job root: bound at their own path (launcher.components.caches)
    plan = _with(_plan("cluster.setup=['module load cuda/12.4']"), IMAGES[runtime], cache_dir="/shared/caches")
    text = rendered_steps(plan)
    golden = GOLDEN / f"container_{runtime}.steps"
    if UPDATE:
        golden.write_text(text)
    assert text == golden.read_text()
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_no_container_leaves_the_step_as_it_was():
    plan = _plan()
    assert all(c.container is None for c in plan.components)
    assert wrap(None, ["python", "-m", "x"], True, JOB_DIR) == ([], ["python", "-m", "x"])
    argv = SlurmSteps(plan).argv(plan.component("server"), ENV)
    assert argv[-4:] == ["/opt/venv/bin/python", "-u", "-m", "launcher.components.serve"]
    assert "in:   the host (no container)" in str(plan)


def test_each_runtime_gets_the_job_folder_gpus_and_env_it_needs():
    argv = ["python", "-m", "launcher.components.serve"]
    flags, inner = wrap(IMAGES["pyxis"], argv, True, JOB_DIR)
    assert inner == argv  # pyxis: srun itself enters the image; the GPUs are Slurm's
    assert f"--container-mounts=/shared/models:/models:ro,/scratch:/scratch,{JOB_DIR}:{JOB_DIR}" in flags
    env_flag = next(f for f in flags if f.startswith("--container-env="))
    assert set(PASSTHROUGH_ENV) | {"WANDB_PROJECT"} == set(env_flag.split("=", 1)[1].split(","))
    flags, inner = wrap(IMAGES["apptainer"], argv, True, JOB_DIR)
    assert flags == [] and inner[:3] == ["apptainer", "exec", "--nv"] and inner[-3:] == argv
    assert ["--bind", f"{JOB_DIR}:{JOB_DIR}"] == inner[5:7]
    assert "--nv" not in wrap(IMAGES["apptainer"], argv, False, JOB_DIR)[1]  # a CPU component: no --nv
    flags, inner = wrap(IMAGES["charliecloud"], argv, True, JOB_DIR)
    assert inner[0] == "ch-run" and inner[-4:] == ["--", *argv] and ["-b", f"{JOB_DIR}:{JOB_DIR}"] == inner[3:5]
    # a mount that already binds the job folder is not doubled
    own = dataclasses.replace(IMAGES["singularity"], mounts=[f"{JOB_DIR}:/job"])
    assert wrap(own, argv, True, JOB_DIR)[1].count("--bind") == 1


def _images(tmp_path) -> tuple[str, str]:
    (tmp_path / "a.sif").write_text("")
    (tmp_path / "t.sif").write_text("")
    return str(tmp_path / "a.sif"), str(tmp_path / "t.sif")


def test_component_keys_override_the_clusters_key_by_key(tmp_path):
    a, t = _images(tmp_path)
    plan = _plan("cluster.container.runtime=apptainer", f"cluster.container.image={a}",
                 "cluster.container.mounts=[/data:/data]", f"trainer.container.image={t}",
                 "server.container.runtime=none", f"cluster.job_root={tmp_path}/jobs")
    trainer = plan.component("trainer").container
    assert trainer == Container("apptainer", t, ["/data:/data"], job_root=f"{tmp_path}/jobs")
    assert plan.component("server").container is None  # runtime=none: this component on the host
    back = Plan.from_json(plan.to_json())  # what the job reads
    assert back.component("trainer").container == trainer and back.component("server").container is None
    assert (f"in:   apptainer {t}; mounts /data:/data; + the job root {tmp_path}/jobs, the Hugging Face cache and the compile caches"
            in str(plan))
    # the job root, not each job folder, is bound: a read-only directory image (ch-run) has it made once
    argv = SlurmSteps(plan).argv(plan.component("trainer"), dict(ENV, LAUNCHER_JOB_DIR=f"{tmp_path}/jobs/n/1"))
    assert f"{tmp_path}/jobs:{tmp_path}/jobs" in argv and f"{tmp_path}/jobs/n/1:{tmp_path}/jobs/n/1" not in argv


HOSTILE = ["/img/it's a.sif", '/m/"q":/dst $(touch /tmp/pwned-containers)', "`id`;x", "$HOME && y"]


@pytest.mark.parametrize("runtime", sorted(IMAGES))
def test_hostile_values_reach_the_runtime_as_single_arguments(runtime, tmp_path):
    container = Container(runtime, HOSTILE[0], [HOSTILE[1]], HOSTILE[2], [HOSTILE[3]], ["A_B"])
    plan = _with(_plan("cluster.setup=['echo set up']"), container)
    env = dict(ENV, LAUNCHER_JOB_DIR=str(tmp_path / "job dir; $(id)"))
    for component in plan.components:
        argv = SlurmSteps(plan).argv(component, env)
        line = shlex.join(argv)
        # bash parses the line the way srun would receive it: printf stands in for srun
        out = subprocess.run(["bash", "-c", "printf '%s\\0' " + shlex.join(argv[1:])], capture_output=True)
        assert out.returncode == 0, line
        assert out.stdout.split(b"\0")[:-1] == [a.encode() for a in argv[1:]]
    assert not Path("/tmp/pwned-containers").exists()


def _problems(*overrides: str, backend: str = "slurm"):
    cfg = compose("+experiment=deepmath", f"cluster={backend}", "trainer.gpus_per_node=2", *overrides)
    return [(p.keys, p.message, p.severity) for p in validate(cfg, FACTS if backend == "slurm" else Facts(local_gpus=4))
            if p.keys[0].split(".")[1:2] == ["container"] or "ch-run cannot bind" in p.message]


def test_an_image_that_does_not_exist_is_refused_naming_the_key_it_came_from(tmp_path):
    a, _ = _images(tmp_path)
    missing = str(tmp_path / "nope.sif")
    errors = [p for p in _problems("cluster.container.runtime=apptainer", f"cluster.container.image={missing}")
              if p[2] == "error"]
    assert errors == [
        (("cluster.container.image",), f"image {missing} does not exist (a local image must be on the filesystem "
                                       "the nodes share)", "error")]  # said once for both components
    problems = _problems("cluster.container.runtime=apptainer", f"cluster.container.image={a}",
                         f"trainer.container.image={missing}")
    assert [p[0] for p in problems if p[2] == "error"] == [("trainer.container.image",)]
    # registry images are not looked for on disk
    assert not [p for p in _problems("cluster.container.runtime=pyxis", "cluster.container.image='nvcr.io#nvidia/pytorch:24.01'",
                                     "server.container.image=docker://vllm/vllm-openai") if p[2] == "error"]
    assert _problems("trainer.container.runtime=charliecloud")[0][:2] == (
        ("trainer.container.image",), "the charliecloud runtime needs an image")


def test_mounts_workdir_env_and_flags_are_checked(tmp_path):
    a, _ = _images(tmp_path)
    base = ("cluster.container.runtime=apptainer", f"cluster.container.image={a}")
    messages = {p[1] for p in _problems(*base, "cluster.container.mounts=[/data,/x:]", "cluster.container.workdir=work",
                                        "server.container.env=[OK_NAME,1BAD]", "trainer.container.flags=[--cleanenv]")}
    assert "'/data' has no target: write src:dst (or src:dst:ro)" in messages
    assert "'/x:' has no target: write src:dst (or src:dst:ro)" in messages
    assert "'work' must be an absolute path inside the image" in messages
    assert "'1BAD' is not an environment variable name" in messages
    assert any(m.startswith("--cleanenv would keep the launcher's environment") for m in messages)
    assert [p[:2] for p in _problems(*base, "server.container.mounts=[/a:/b:ro:x]") if p[2] == "error"] == [
        (("server.container.mounts",), "'/a:/b:ro:x': a path with ':' cannot be mounted (src:dst[:opts])")]
    ch = _problems("cluster.container.runtime=charliecloud", f"cluster.container.image={tmp_path}",
                   "cluster.container.mounts=[/a:/b:ro]")
    assert ("cluster.container.mounts",) in [p[0] for p in ch if "ch-run takes no mount options" in p[1]]


def test_which_runtimes_must_be_on_this_machine(tmp_path, monkeypatch):
    a, _ = _images(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    slurm = _problems("cluster.container.runtime=apptainer", f"cluster.container.image={a}")
    assert slurm == [(("cluster.container.runtime",), "apptainer is not on PATH on this login node (fine only if "
                      "the compute nodes have it)", "warning")]
    local = _problems("cluster.container.runtime=charliecloud", f"cluster.container.image={tmp_path}",
                      "cluster.container.flags=[-w]", backend="local")
    assert local == [(("cluster.container.runtime",), "ch-run is not on PATH on this machine, where cluster=local "
                      "runs the components", "error")]
    pyxis = _problems("trainer.container.runtime=pyxis", "trainer.container.image=ubuntu", backend="local")
    assert [p[0] for p in pyxis] == [("trainer.container.runtime",)] and "needs the Slurm backend" in pyxis[0][1]
    assert _problems("cluster.container.runtime=pyxis", "cluster.container.image=ubuntu") == []  # not checked here


def test_the_hugging_face_cache_the_job_reads_is_bound_too():
    plan = dataclasses.replace(_with(_plan(), IMAGES["apptainer"]), hf_home="/shared/hf")
    argv = SlurmSteps(plan).argv(plan.component("server"), ENV)
    assert ["--bind", "/shared/hf:/shared/hf"] == argv[argv.index("/shared/hf:/shared/hf") - 1:][:2]
    assert wrap(IMAGES["charliecloud"], ["x"], False, None, ["/shared/hf"])[1][:5] == [
        "ch-run", "-b", "/shared/models:/models", "-b", "/shared/hf:/shared/hf"]


def test_the_plan_text_shows_each_components_step_in_its_image():
    text = str(_with(_plan(), IMAGES["pyxis"]))
    assert text.count("           step: srun ... --container-image=/shared/images/grpo.sqsh ") == 2
    assert "'--container-mounts=/shared/models:/models:ro,/scratch:/scratch,<job folder>:<job folder>'" in text
    text = str(_with(_plan(), IMAGES["singularity"]))
    assert ("step: srun ... singularity exec --nv --bind /shared/models:/models --bind '<job folder>:<job folder>' "
            "/shared/images/grpo.sif /opt/venv/bin/python -u -m launcher.components.trainer_step") in text


def test_a_charliecloud_directory_image_needs_folders_at_its_bind_targets(tmp_path):
    image, root = tmp_path / "img", tmp_path / "jobs"
    (image / "models").mkdir(parents=True)
    # -t (a private /tmp): the job root under /tmp must be in the image too
    args = ("cluster.container.runtime=charliecloud", f"cluster.container.image={image}",
            "cluster.container.mounts=[/m:/models,/d:/data]", f"cluster.job_root={root}", "cluster.container.flags=[-t]")
    problems = [p for p in _problems(*args) if p[2] == "error"]
    assert [p[0] for p in problems] == [("cluster.container.mounts",), ("cluster.job_root",)]
    assert problems[1][1].startswith(f"{root} is not a folder in the image {image}: ch-run cannot bind onto it")
    # without -t ch-run binds the node's /tmp over the image's: a job root under it is there already
    shared_tmp = [p[0] for p in _problems(*args[:4]) if p[2] == "error"]
    assert shared_tmp == [("cluster.container.mounts",)] and str(root).startswith("/tmp/")
    (image / "data").mkdir()
    (image / str(root).lstrip("/")).mkdir(parents=True)
    assert not [p for p in _problems(*args) if p[2] == "error"]
    assert not [p for p in _problems(*args[:3], "cluster.container.flags=[-w]") if p[2] == "error"]


def test_a_read_only_charliecloud_image_without_a_writable_hf_cache_is_warned_about(tmp_path):
    image = tmp_path / "img"
    (image / "jobs").mkdir(parents=True)
    cfg = ("cluster.container.runtime=charliecloud", f"cluster.container.image={image}", f"cluster.job_root={tmp_path}")

    def warned(*more):
        found = compose("+experiment=deepmath", "cluster=slurm", "trainer.gpus_per_node=2", *cfg, *more)
        return [p.message for p in validate(found, FACTS) if p.keys == ("cluster.hf_home",)]

    (message,) = warned()
    assert "read-only in a charliecloud image: set cluster.hf_home" in message
    assert warned(f"cluster.hf_home={tmp_path / 'hf'}") == []  # bound at its own path: writable
    assert warned("cluster.container.flags=[-w]") == []
    home = os.path.expanduser("~/.cache")
    assert warned(f"cluster.container.mounts=[{home}:{home}]") == []


def _tiny_image(root: Path, *folders: str) -> Path:
    """A directory image of bash and the libraries it links (a few MB, made in milliseconds)."""
    image = root / "image"
    for d in ("usr/bin", "usr/lib", "usr/lib64", "dev", "proc", "sys", "tmp", "home", "etc", *folders):
        (image / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for d in ("bin", "lib", "lib64"):
        (image / d).symlink_to(f"usr/{d}")
    for f in ("passwd", "group", "hosts", "resolv.conf"):
        (image / "etc" / f).touch()
    libs = subprocess.run(["ldd", "/usr/bin/bash"], capture_output=True, text=True).stdout.split()
    for path in ["/usr/bin/bash", *(p for p in libs if p.startswith("/"))]:
        subprocess.run(["cp", "-L", "--parents", path, str(image)], check=True)
    return image


def test_a_step_really_runs_in_a_charliecloud_image_with_the_job_folder_and_env(tmp_path, monkeypatch):
    from launcher.supervisor.steps import LocalSteps

    root = tmp_path / "jobs"
    job_dir = root / "smoke" / "20261201-000000-abcd"
    job_dir.mkdir(parents=True)
    image = _tiny_image(tmp_path, str(root))
    monkeypatch.delenv("USER", raising=False)  # ch-run refuses to start without it; the step is given it
    container = Container("charliecloud", str(image), job_root=str(root), workdir="/tmp")
    plan = _with(_plan(), container)
    script = ('test -x /usr/bin/bash && ! test -e /work && cd "$LAUNCHER_JOB_DIR" && '
              'printf "%s|%s|%s" "$LAUNCHER_JOB_DIR" "$LAUNCHER_BACKEND" "$QUOTED" > seen')
    component = dataclasses.replace(plan.component("server"), step=["bash", "-c", script])
    env = dict(os.environ, LAUNCHER_JOB_DIR=str(job_dir), QUOTED="it's $(id) `x`")
    step = LocalSteps(plan).start(component, env, tmp_path / "server.log")
    step.proc.wait(timeout=30)
    assert step.kill() == 0, (tmp_path / "server.log").read_text()
    assert (job_dir / "seen").read_text() == f"{job_dir}|local|it's $(id) `x`"


def test_commands_txt_records_each_step_in_its_image():
    from launcher.jobfolder.layout import component_commands

    text = component_commands(_with(_plan(), IMAGES["charliecloud"]), Path(JOB_DIR))
    assert ("# trainer: in its charliecloud image\nch-run -b /shared/models:/models -b "
            f"{JOB_DIR}:{JOB_DIR} -c /workspace /shared/images/grpo -- /opt/venv/bin/python -u -m "
            "launcher.components.trainer_step\n") in text
    assert "# server: in its pyxis image (srun flags, then the step)\n--container-image=" in component_commands(
        _with(_plan(), IMAGES["pyxis"]), Path(JOB_DIR))
