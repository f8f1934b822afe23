"""Security on the real test cluster: hostile values never execute, secrets travel only in the
environment, job folders are private, the server binds the node's cluster address, and only the job gets
into its server (every endpoint but GET /health needs the attempt's token, which is written nowhere; in
the same job the counter-check: the token itself, asked from the same other node, gets in. That an open
server, server.require_token=false, gets no guard is the wrapper's decision, pinned by
tests/test_server_auth.py).

Hostile values reach every layer that could run a shell: the job name (the job folder path, #SBATCH lines,
the `exec` line of the batch script, srun's --job-name), #SBATCH values, exported environment values
(with a newline), a GRPOConfig string and a `trl vllm-serve` argument. They come from a YAML experiment
file (YAML expresses quotes and newlines exactly). If any shell ever evaluated one, a `pwned-*` file would
appear in the job's working directory.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launcher.jobfolder import names
from launcher.jobfolder.layout import latest_attempt
from launcher.jobfolder.progress import read_heartbeat, read_metrics
from launcher.server_auth import TOKEN_ENV

from .conftest import CLUSTER, REPO, Launched, wait_state
from .test_faults import no_job_processes

pytestmark = pytest.mark.cluster

# each clause tries a different way into a shell; all of them create a marker file if evaluated
PAYLOAD = "a'b\"c;touch pwned-semi;$(touch pwned-dollar)`touch pwned-tick`&&touch pwned-and|touch pwned-pipe"
WITH_NEWLINE = PAYLOAD + "\ntouch pwned-newline"
# the job name may not hold "|" (sacct's delimiter: validation refuses it); everything else stays
NAME = PAYLOAD.replace("|touch pwned-pipe", "")


def _secrets() -> dict[str, str]:
    return {"HF_TOKEN": f"hf_{secrets.token_hex(12)}", "WANDB_API_KEY": f"wandb{secrets.token_hex(12)}",
            "MY_SERVICE_TOKEN": f"svc{secrets.token_hex(12)}"}


def _experiment(tmp_path: Path) -> Path:
    conf = tmp_path / "conf" / "hostile"
    conf.mkdir(parents=True)
    body = {
        "name": NAME,
        "server": {"env": {"HOSTILE_SERVER": WITH_NEWLINE}, "extra_args": ["--served-model-name", PAYLOAD]},
        "trainer": {"env": {"HOSTILE_TRAINER": PAYLOAD}},
        "cluster": {"env": {"HOSTILE_ALL": WITH_NEWLINE}, "sbatch": {"comment": PAYLOAD},
                    "secret_env": ["HF_TOKEN", "WANDB_API_KEY", "MY_SERVICE_TOKEN"]},
        "grpo": {"run_name": WITH_NEWLINE, "max_steps": 20, "save_steps": 1000},
    }
    path = conf / "hostile.yaml"
    path.write_text("# @package _global_\n" + yaml.safe_dump(body, allow_unicode=True))
    return tmp_path / "conf"


def _cli(env: dict, cwd: Path, conf: Path, *overrides: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "launcher", "+experiment=smoke", "+hostile=hostile",
            f"hydra.searchpath=[file://{conf}]", "cluster=slurm", f"cluster.job_root={cwd / 'jobs'}",
            "server.enforce_eager=true", *overrides]
    # a permissive umask (group write) in the submitting shell: the job folder must stay private anyway
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
                          preexec_fn=lambda: os.umask(0o002))


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def test_hostile_values_never_execute_and_secrets_stay_in_the_environment(cluster_env, smoke_assets, tmp_path):
    values = _secrets()
    env = dict(cluster_env, **values)
    conf = _experiment(tmp_path)

    dry = _cli(env, tmp_path, conf, "dry_run=true")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "secrets from your environment (never written): HF_TOKEN, WANDB_API_KEY, MY_SERVICE_TOKEN" in dry.stdout

    out = _cli(env, tmp_path, conf)
    assert out.returncode == 0, out.stdout + out.stderr
    job_id, job_dir = re.search(r"submitted job (\d+); job folder (.+)$", out.stdout, re.M).groups()
    job_dir = Path(job_dir)
    try:
        assert job_dir.parent.name == NAME  # the hostile name is the folder, verbatim
        # while it runs: each value arrived intact, as data, in the component it was meant for
        attempt = _wait(lambda: latest_attempt(job_dir), 600)
        _wait(lambda: (attempt / names.SERVER_READY).is_file(), 900)  # the handover: the trainer connects now
        beat = _wait(lambda: read_heartbeat(attempt), 60)
        server = json.loads((attempt / "server.json").read_text())
        trainer_env, server_env = _environ(beat.pid), _environ(server["pid"])
        token = trainer_env[TOKEN_ENV]  # the attempt's token reached both components through the environment
        assert len(token) >= 32 and server_env[TOKEN_ENV] == token
        values[TOKEN_ENV] = token  # ... and, like the secrets, is written nowhere (checked below)
        assert trainer_env["HOSTILE_TRAINER"] == PAYLOAD and trainer_env["HOSTILE_ALL"] == WITH_NEWLINE
        assert server_env["HOSTILE_SERVER"] == WITH_NEWLINE and "HOSTILE_TRAINER" not in server_env
        for name, value in values.items():  # secrets reach both components through the environment
            assert trainer_env[name] == value and server_env[name] == value
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                               env=cluster_env).stdout
        assert f"JobName={NAME} " in shown and f"Comment={PAYLOAD} " in shown
        accounted = subprocess.run(["sacct", "-j", job_id, "--json"], capture_output=True, text=True, env=cluster_env).stdout
        assert token not in shown and token not in accounted  # no Slurm field the launcher sets holds it
        # from another node: only the job's token gets in, on every endpoint (GET /health answers anyone)
        other = next(n for n in ("node1", "node2", "node3") if n != server["host"])
        wrong = secrets.token_urlsafe(32)
        tries = [("GET", "/v1/models", None), ("GET", "/v1/models", wrong), ("POST", "/v1/completions", None)]
        tries += [("POST", path, None) for path in DEV_ENDPOINTS] + [("GET", "/server_info", wrong)]
        answers = _ask(cluster_env, other, server["url"], tries + [("GET", "/health", None), ("GET", "/v1/models", token)])
        assert answers[:-2] == [[401, ""]] * len(tries), list(zip(tries, answers))
        assert answers[-2][0] == 200 and json.loads(answers[-1][1])["data"][0]["id"] == PAYLOAD, answers[-2:]
        refused = (attempt / "server.log").read_text()
        for method, path, _ in tries:
            assert f"refused {method} {path} from " in refused, path
        assert token not in refused and wrong not in refused  # refusals logged without what was sent

        # the server listens on the node's cluster address only, on a port of its own
        assert server["address"].startswith("10.213.0.") and server["url"] == f"http://{server['address']}:{server['port']}"
        sockets = subprocess.run([str(CLUSTER), "on", server["host"], "ss", "-Hltn"], capture_output=True,
                                 text=True, env=cluster_env).stdout
        listening = [line.split()[3] for line in sockets.splitlines() if line.split()[3].endswith(f":{server['port']}")]
        assert listening == [f"{server['address']}:{server['port']}"], sockets

        assert wait_state(job_id, 900) == "COMPLETED"  # and the job trained through the guard, syncing every step
        train = [r for r in read_metrics(attempt) if r.get("kind") == "train"]
        assert len(train) == 20 and all((r.get("weight_sync_s") or 0) > 0 for r in train)
    finally:
        subprocess.run(["scancel", job_id], env=cluster_env, capture_output=True)

    markers = [p for p in tmp_path.rglob("pwned-*")] + [p for p in REPO.glob("pwned-*")]
    assert markers == [], f"a hostile value was executed: {markers}"

    # secrets: nowhere in the job folder (scripts, plan, config, logs, submitit pickles, slurm-*.out),
    # nowhere in what the CLI printed, nowhere in the dry run
    assert (job_dir / "job.sbatch").read_text().count("HOSTILE_ALL=") == 1  # plain env values are written (documented)
    for path in _files(tmp_path):
        data = path.read_bytes()
        for name, value in values.items():
            assert value.encode() not in data, f"{name} leaked into {path}"
    for name, value in values.items():
        assert value not in out.stdout + out.stderr + dry.stdout + dry.stderr, f"{name} printed"

    # private: the job folder is the user's alone, and nothing in it is group/world writable
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    loose = [(p, oct(stat.S_IMODE(p.lstat().st_mode))) for p in [job_dir, *job_dir.rglob("*")]
             if not p.is_symlink() and p.lstat().st_mode & 0o022]
    assert loose == []
    assert no_job_processes(Launched(job_id, job_dir, ""), 60) == []


# the development endpoints TRL's server mode needs (vLLM has no authentication on any of them)
DEV_ENDPOINTS = ["/init_weight_transfer_engine", "/start_weight_update", "/update_weights", "/finish_weight_update",
                 "/collective_rpc", "/reset_prefix_cache", "/sleep", "/wake_up"]

_ASK = """
import json, sys, urllib.request, urllib.error
url, tries = sys.argv[1], json.loads(sys.argv[2])
answers = []
for method, path, token in tries:
    headers = {"X-Launcher-Job-Token": token} if token else {}
    request = urllib.request.Request(url + path, method=method, headers=headers, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answers.append([response.status, response.read().decode()])
    except urllib.error.HTTPError as error:
        answers.append([error.code, ""])
print(json.dumps(answers))
"""


def _ask(cluster_env, node: str, url: str, tries: list) -> list:
    """Each (method, path, token) asked from `node`'s network namespace: [status, body] per try."""
    out = subprocess.run([str(CLUSTER), "on", node, "python3", "-c", _ASK, url, json.dumps(tries)],
                         capture_output=True, text=True, env=cluster_env)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def _wait(probe, timeout_s: float):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not ready after {timeout_s} s")


def test_secrets_stay_out_of_a_sweep_folder(cluster_env, smoke_assets, tmp_path):
    """A sweep writes a manifest and one job folder per point: none of them holds a secret value.
    The points are held (+cluster.sbatch.hold=true): they queue, never start, and are cancelled."""
    values = _secrets()
    env = dict(cluster_env, **values)
    name = f"sec{secrets.token_hex(3)}"
    try:
        out = subprocess.run([sys.executable, "-m", "launcher", "-m", "+experiment=smoke", "cluster=slurm",
                              f"cluster.job_root={tmp_path / 'jobs'}", f"name={name}", "+cluster.sbatch.hold=true",
                              "cluster.secret_env=[HF_TOKEN,WANDB_API_KEY,MY_SERVICE_TOKEN]",
                              "trainer.preflight_prompts=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                              "grpo.report_to=[wandb,tensorboard]"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert len(re.findall(r"submitted job \d+", out.stdout)) == 2, out.stdout
    finally:
        subprocess.run(["scancel", "-n", name], env=cluster_env, capture_output=True)
    files = _files(tmp_path)
    assert any(p.name == "manifest.jsonl" for p in files), [str(p) for p in files]
    # each point's W&B run (tracking.json, wandb-config.yaml: checked below with every file): one group, own ids
    runs = sorted((json.loads(p.read_text()) for p in files if p.name == "tracking.json"), key=lambda r: r["name"])
    assert [(r["group"], r["name"]) for r in runs] == [("sweep-sweep", f"{name}-0"), ("sweep-sweep", f"{name}-1")]
    assert runs[0]["run_id"] != runs[1]["run_id"] and any(p.name == "wandb-config.yaml" for p in files)
    for path in files:
        for secret_name, value in values.items():
            assert value.encode() not in path.read_bytes(), f"{secret_name} leaked into {path}"
    for secret_name, value in values.items():
        assert value not in out.stdout + out.stderr
