"""The login-node path stays light: the dry-run imports none of the heavy packages."""

import json
import subprocess

import pytest

from conftest import PYTHON

HEAVY = ("torch", "trl", "vllm", "transformers", "datasets", "accelerate", "numpy", "peft")

PROBE = """
import atexit, json, runpy, sys
sys.argv = ["launcher", "+experiment=deepmath", "cluster={cluster}", "dry_run=true"]
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
runpy.run_module("launcher", run_name="__main__")
"""


@pytest.mark.parametrize("cluster, shown", [("slurm", "#SBATCH hetjob"), ("local", "# local processes:")])
def test_dry_run_imports_nothing_heavy(cluster, shown):
    out = subprocess.run([PYTHON, "-c", PROBE.replace("{cluster}", cluster)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert shown in out.stdout  # the dry-run really ran
    line = next(l for l in out.stderr.splitlines() if l.startswith("MODULES "))
    modules = json.loads(line[len("MODULES "):])
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert loaded == []
    # the dry-run neither starts a supervisor nor loads a backend, the trainer or the component wrappers
    assert sorted(m for m in modules if m.startswith(("launcher.supervisor", "launcher.backends", "launcher.train",
                                                      "launcher.components"))) == []
