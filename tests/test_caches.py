"""The server's shared compile caches (launcher/components/caches.py): where they go, what keys them, and that
the server wrapper really hands them to vLLM."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import PYTHON, REPO, compose
from launcher.components.caches import CACHE_VARS, cache_env, cache_facts, cache_key, flag_value
from launcher.plan.build import build_plan
from launcher.validate.problems import Facts

VERSIONS = {"vllm": "0.31.0+cpu", "torch": "2.13.0+cpu", "triton": "3.6.0"}
CONTAINER_FACTS = Facts(partitions={"gpu": {"gpus_per_node": 8, "nodes": 16, "max_time_s": None, "cpus_per_node": 96,
                                            "mem_mb_per_node": 1024000}}, default_partition="gpu")


def plan(tmp_path: Path, *overrides: str):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    return build_plan(compose("+experiment=deepmath", "cluster=local", f"cluster.job_root={tmp_path}/jobs",
                              f"model.name_or_path={model}", f"data.name_or_path={tmp_path}", *overrides))


def test_the_caches_default_to_the_job_root_and_follow_cluster_cache_dir(tmp_path):
    assert plan(tmp_path).cache_dir == os.path.realpath(tmp_path / "jobs" / ".cache")
    assert plan(tmp_path, f"cluster.cache_dir={tmp_path}/shared").cache_dir == str(tmp_path / "shared")


def test_jobs_with_the_same_model_versions_and_parallelism_share_one_folder(tmp_path):
    base = cache_key(plan(tmp_path), "cuda", VERSIONS)
    # a sweep point or a requeued attempt: other training settings, same server
    assert cache_key(plan(tmp_path, "grpo.learning_rate=3e-6", "+grpo.seed=7", "server.gpu_memory_utilization=0.5"),
                     "cuda", VERSIONS) == base
    assert base.startswith("model-")
    others = {cache_key(plan(tmp_path, "server.tensor_parallel_size=2", "server.gpus_per_node=2"), "cuda", VERSIONS),
              cache_key(plan(tmp_path, "server.data_parallel_size=2", "server.gpus_per_node=2"), "cuda", VERSIONS),
              cache_key(plan(tmp_path, "model.revision=v2"), "cuda", VERSIONS),
              cache_key(plan(tmp_path), "cpu", VERSIONS),
              cache_key(plan(tmp_path), "cuda", {**VERSIONS, "vllm": "0.26.0"}),
              cache_key(plan(tmp_path), "cuda", {**VERSIONS, "torch": "2.11.0"})}
    assert base not in others and len(others) == 6


def test_the_environment_wins(tmp_path):
    p = plan(tmp_path)
    env = cache_env(p, "cuda", {"TRITON_CACHE_DIR": "/mine"}, VERSIONS)
    folder = Path(p.cache_dir) / "compile" / cache_key(p, "cuda", VERSIONS)
    assert env == {"VLLM_CACHE_ROOT": str(folder / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor")}
    assert flag_value(["--tensor-parallel-size=4"], "tensor_parallel_size") == "4"
    assert flag_value(["--tensor_parallel_size", "2"], "tensor_parallel_size") == "2"


def _wrapper_env(job: Path, attempt: Path, p) -> dict[str, str]:
    """A job folder holding plan `p`, and the environment the supervisor starts a component wrapper with
    (none of the cache variables: the wrapper decides them)."""
    attempt.mkdir(parents=True)
    (job / "plan.json").write_text(p.to_json())
    env = dict(os.environ, LAUNCHER_JOB_DIR=str(job), LAUNCHER_ATTEMPT_DIR=str(attempt), LAUNCHER_BACKEND="local",
               CUDA_VISIBLE_DEVICES="")
    for var in CACHE_VARS.values():
        env.pop(var, None)
    return env


def test_the_server_wrapper_hands_the_caches_to_vllm(tmp_path, smoke_assets_local):
    """The wrapper as the supervisor starts it, with `trl` replaced by a stand-in that prints its environment."""
    job, attempt, bin_dir = tmp_path / "job", tmp_path / "job" / "attempt-1", tmp_path / "bin"
    bin_dir.mkdir()
    fake_trl = bin_dir / "trl"  # `trl` is taken from beside the job's Python
    fake_trl.write_text("#!/bin/sh\nenv\n")
    fake_trl.chmod(0o755)
    p = build_plan(compose("+experiment=smoke", "cluster=local", f"cluster.job_root={tmp_path}/jobs"),
                   python=str(bin_dir / "python"))
    env = _wrapper_env(job, attempt, p)
    env.pop("LAUNCHER_SERVER_TOKEN", None)
    unprotected = subprocess.run([PYTHON, "-m", "launcher.components.serve"], cwd=REPO, env=env, capture_output=True,
                                 text=True, timeout=120)
    assert unprotected.returncode == 2 and "refusing to serve unprotected" in unprotected.stderr  # no token, no server
    env["LAUNCHER_SERVER_TOKEN"] = "token-from-the-supervisor"
    out = subprocess.run([PYTHON, "-m", "launcher.components.serve"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    seen = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line and not line.startswith(" "))
    folder = Path(p.cache_dir) / "compile"
    for var in CACHE_VARS.values():
        assert Path(seen[var]).parent.parent == folder, (var, seen.get(var))
    record = json.loads(next(attempt.glob("node-server-*.json")).read_text())
    assert record["caches"]["VLLM_CACHE_ROOT"] == seen["VLLM_CACHE_ROOT"]


# ---- the trainer's caches, and vLLM's inside it in colocate mode


def test_a_colocate_trainer_gets_vllms_caches_keyed_by_the_engine_it_runs(tmp_path):
    """Colocate: no server component; vLLM runs in the trainer, so the trainer gets VLLM_CACHE_ROOT too."""
    p = plan(tmp_path, "mode=colocate")
    assert p.component("server") is None
    env = cache_env(p, "cuda", {}, VERSIONS, component="trainer")
    folder = Path(p.cache_dir) / "compile" / cache_key(p, "cuda", VERSIONS, "trainer")
    assert env == {var: str(folder / name) for name, var in CACHE_VARS.items()}
    assert folder.name.startswith("model-trainer-")
    facts = cache_facts(p, "cuda", VERSIONS, "trainer")
    assert (facts["tensor_parallel"], facts["data_parallel"]) == ("1", "2")  # deepmath: 2 trainer GPUs, 2 engines
    # a requeued attempt or the next sweep point: same model, versions, layout and engine -> the same folder
    assert cache_key(plan(tmp_path, "mode=colocate", "grpo.learning_rate=3e-6", "+grpo.seed=7"), "cuda",
                     VERSIONS, "trainer") == folder.name
    tp2 = plan(tmp_path, "mode=colocate", "+grpo.vllm_tensor_parallel_size=2")  # one engine over both GPUs
    assert (cache_facts(tp2, "cuda", VERSIONS, "trainer")["tensor_parallel"],
            cache_facts(tp2, "cuda", VERSIONS, "trainer")["data_parallel"]) == ("2", "1")
    dp1 = plan(tmp_path, "mode=colocate", "trainer.gpus_per_node=1")  # one engine of TP 1
    assert cache_facts(dp1, "cuda", VERSIONS, "trainer")["data_parallel"] == "1"
    others = {cache_key(x, "cuda", VERSIONS, "trainer") for x in (tp2, dp1)}
    others |= {cache_key(p, "cuda", {**VERSIONS, "vllm": "0.26.0"}, "trainer"),
               cache_key(plan(tmp_path, "mode=colocate", "model.revision=v2"), "cuda", VERSIONS, "trainer")}
    assert folder.name not in others and len(others) == 4


def test_a_server_mode_trainer_gets_its_own_triton_and_inductor_caches_but_not_vllms(tmp_path):
    p = plan(tmp_path)
    env = cache_env(p, "cuda", {}, VERSIONS, component="trainer")
    folder = Path(p.cache_dir) / "compile" / cache_key(p, "cuda", VERSIONS, "trainer")
    assert env == {"TRITON_CACHE_DIR": str(folder / "triton"), "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor")}
    # its own folder, not the server's: other processes, other kernels
    assert folder.name != cache_key(p, "cuda", VERSIONS, "server")
    assert "tensor_parallel" not in cache_facts(p, "cuda", VERSIONS, "trainer")  # no engine inside it
    # use_vllm=false in colocate: no vLLM anywhere, so no VLLM_CACHE_ROOT either
    none = plan(tmp_path, "mode=colocate", "trainer.use_vllm=false")
    assert "VLLM_CACHE_ROOT" not in cache_env(none, "cpu", {}, VERSIONS, component="trainer")


def test_the_trainers_key_follows_its_layout_and_not_the_servers(tmp_path):
    base = cache_key(plan(tmp_path), "cuda", VERSIONS, "trainer")
    # the server's parallelism and the training settings do not split the trainer's caches
    sweep_point = plan(tmp_path, "server.tensor_parallel_size=2", "server.gpus_per_node=2", "grpo.learning_rate=3e-6")
    assert cache_key(sweep_point, "cuda", VERSIONS, "trainer") == base
    others = {cache_key(plan(tmp_path, "trainer.gpus_per_node=4"), "cuda", VERSIONS, "trainer"),
              cache_key(plan(tmp_path, "trainer.strategy=ddp"), "cuda", VERSIONS, "trainer"),
              cache_key(plan(tmp_path, "trainer.strategy=fsdp2"), "cuda", VERSIONS, "trainer"),
              cache_key(plan(tmp_path), "cpu", VERSIONS, "trainer"),
              cache_key(plan(tmp_path), "cuda", {**VERSIONS, "torch": "2.11.0"}, "trainer")}
    assert base not in others and len(others) == 5


def test_the_environment_wins_for_the_trainer_too(tmp_path):
    p = plan(tmp_path, "mode=colocate")
    env = cache_env(p, "cuda", {"TORCHINDUCTOR_CACHE_DIR": "/mine", "VLLM_CACHE_ROOT": "/ours"}, VERSIONS, "trainer")
    assert set(env) == {"TRITON_CACHE_DIR"}
    try:
        cache_env(p, "cuda", {}, VERSIONS, "supervisor")
    except ValueError as error:
        assert "supervisor" in str(error)
    else:
        raise AssertionError("a component without caches must be refused")


def _fake_python(bin_dir: Path) -> Path:
    """A stand-in for the job's Python that prints its environment instead of running the trainer."""
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text("#!/bin/sh\nenv\n")
    fake.chmod(0o755)
    return fake


def _run_trainer_step(tmp_path: Path, *overrides: str) -> tuple[dict, dict, object]:
    """The trainer wrapper as the supervisor starts it (preflight: node 0 execs the job's Python), with the
    plan's Python a stand-in printing its environment; (the environment it got, its node record, the plan)."""
    job, attempt = tmp_path / "job", tmp_path / "job" / "attempt-1"
    fake = _fake_python(tmp_path / "bin")
    p = build_plan(compose("+experiment=smoke", "cluster=local", f"cluster.job_root={tmp_path}/jobs",
                           "trainer.preflight=true", *overrides), python=str(fake))
    env = _wrapper_env(job, attempt, p)
    env["TRITON_CACHE_DIR"] = "/the/users/own"  # the environment wins
    out = subprocess.run([PYTHON, "-m", "launcher.components.trainer_step"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    seen = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line and not line.startswith(" "))
    record = json.loads(next(attempt.glob("node-trainer-*.json")).read_text())
    return seen, record, p


def test_the_trainer_wrapper_hands_a_colocate_trainer_vllms_caches(tmp_path, smoke_assets_local):
    seen, record, p = _run_trainer_step(tmp_path, "mode=colocate", f"cluster.cache_dir={tmp_path}/shared")
    folder = Path(tmp_path / "shared" / "compile")
    assert Path(seen["VLLM_CACHE_ROOT"]).parent.parent == folder and seen["VLLM_CACHE_ROOT"].endswith("/vllm")
    assert Path(seen["TORCHINDUCTOR_CACHE_DIR"]).parent == Path(seen["VLLM_CACHE_ROOT"]).parent
    assert "-trainer-" in Path(seen["VLLM_CACHE_ROOT"]).parent.name
    assert seen["TRITON_CACHE_DIR"] == "/the/users/own"
    assert record["caches"] == {k: seen[k] for k in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR")}


def test_the_trainer_wrapper_in_server_mode_sets_no_vllm_cache(tmp_path, smoke_assets_local):
    """Counter-test of the one above: the same wrapper, server mode: vLLM is the server's, not the trainer's."""
    seen, record, p = _run_trainer_step(tmp_path)
    assert "VLLM_CACHE_ROOT" not in seen and set(record["caches"]) == {"TORCHINDUCTOR_CACHE_DIR"}
    assert Path(seen["TORCHINDUCTOR_CACHE_DIR"]).parent.parent == Path(p.cache_dir) / "compile"


# ---- the caches inside a container: bound at their own path, checked before queueing, really reachable


def _contained_plan(tmp_path: Path, *overrides: str):
    image = tmp_path / "grpo.sif"
    image.write_text("")
    return build_plan(compose("+experiment=deepmath", "cluster=slurm", "cluster.python=/opt/venv/bin/python",
                              "cluster.container.runtime=apptainer", f"cluster.container.image={image}",
                              f"cluster.job_root={tmp_path}/jobs", *overrides), CONTAINER_FACTS)


def test_a_cache_dir_outside_the_job_root_is_bound_into_each_components_image(tmp_path):
    from launcher.jobfolder.layout import component_commands
    from launcher.supervisor.steps import SlurmSteps

    shared = tmp_path / "shared-caches"
    p = _contained_plan(tmp_path, f"cluster.cache_dir={shared}")
    env = {"LAUNCHER_JOB_DIR": f"{tmp_path}/jobs/deepmath/1"}
    for name in ("server", "trainer"):
        argv = SlurmSteps(p).argv(p.component(name), env)
        assert argv[argv.index(f"{shared}:{shared}") - 1] == "--bind", argv
    assert str(p).count(f"--bind {shared}:{shared}") == 2  # the plan text / dry run shows it
    assert component_commands(p, Path(env["LAUNCHER_JOB_DIR"])).count(f"--bind {shared}:{shared}") == 2
    # counter-check: the default cache_dir is inside the job root, which is bound already: no second bind
    default = _contained_plan(tmp_path)
    argv = SlurmSteps(default).argv(default.component("trainer"), env)
    assert default.cache_dir.startswith(f"{tmp_path}/jobs/") and argv.count("--bind") == 1
    assert f"{tmp_path}/jobs:{tmp_path}/jobs" in argv


def test_a_read_only_charliecloud_image_needs_a_folder_for_a_cache_dir_outside_the_job_root(tmp_path):
    from launcher.validate.rules import validate

    image, root, shared = tmp_path / "img", tmp_path / "jobs", tmp_path / "caches"
    (image / str(root).lstrip("/") / "hf").mkdir(parents=True)
    args = ("+experiment=deepmath", "cluster=slurm", "cluster.container.runtime=charliecloud",
            f"cluster.container.image={image}", f"cluster.job_root={root}", "cluster.container.flags=[-t]",
            f"cluster.hf_home={root}/hf")

    def errors(*more):
        return [(p.keys, p.message) for p in validate(compose(*args, *more), CONTAINER_FACTS) if p.severity == "error"]

    (problem,) = errors(f"cluster.cache_dir={shared}")
    assert problem[0] == ("cluster.cache_dir",) and problem[1].startswith(f"{shared} is not a folder in the image")
    (image / str(shared).lstrip("/")).mkdir(parents=True)
    assert errors(f"cluster.cache_dir={shared}") == []  # accepted once the image has the folder
    assert errors(f"cluster.cache_dir={root}/.cache") == []  # under the job root: its bind covers it


def test_a_contained_step_really_writes_its_caches_to_a_cache_dir_outside_the_job_root(tmp_path):
    """ch-run with a private /tmp (-t): only what the launcher binds reaches the host. The step writes where
    the plan's cache folder is; the host sees it, and the folder was made by the launcher before the step."""
    import dataclasses

    from launcher.plan.containers import Container
    from launcher.supervisor.steps import LocalSteps
    from test_containers import _tiny_image

    root, shared = tmp_path / "jobs", tmp_path / "shared-caches"
    job_dir = root / "smoke" / "1"
    job_dir.mkdir(parents=True)
    image = _tiny_image(tmp_path, str(root), str(shared))
    base = build_plan(compose("+experiment=smoke", "cluster=local", f"cluster.job_root={root}",
                              f"cluster.cache_dir={shared}"))
    container = Container("charliecloud", str(image), flags=["-t"], job_root=str(root))

    def run(p, name):
        script = 'echo compiled > "$0/entry"'  # the tiny image has bash only
        component = dataclasses.replace(p.component("server"), container=container,
                                        step=["bash", "-c", script, str(shared)])
        p = dataclasses.replace(p, components=[component])
        step = LocalSteps(p).start(component, dict(os.environ, LAUNCHER_JOB_DIR=str(job_dir), USER="u"),
                                   tmp_path / f"{name}.log")
        step.proc.wait(timeout=30)
        return step.kill(), (tmp_path / f"{name}.log").read_text()

    assert not shared.exists()
    rc, log = run(base, "bound")
    assert rc == 0, log
    assert (shared / "entry").read_text() == "compiled\n"
    # counter-check: the same step without the cache folder in the plan (so not bound) cannot reach it
    (shared / "entry").unlink()
    rc, log = run(dataclasses.replace(base, cache_dir=None), "unbound")
    assert rc != 0 and not (shared / "entry").exists(), log
