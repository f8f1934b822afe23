"""The login-node path stays light: the dry-run imports none of the heavy packages."""

import json
import subprocess

from conftest import PYTHON

HEAVY = ("torch", "trl", "vllm", "transformers", "datasets", "accelerate", "numpy")

PROBE = """
import atexit, json, runpy, sys
sys.argv = ["launcher", "+experiment=deepmath", "cluster=slurm", "dry_run=true"]
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
runpy.run_module("launcher", run_name="__main__")
"""


def test_dry_run_imports_nothing_heavy():
    out = subprocess.run([PYTHON, "-c", PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "#SBATCH hetjob" in out.stdout  # the dry-run really ran
    line = next(l for l in out.stderr.splitlines() if l.startswith("MODULES "))
    modules = json.loads(line[len("MODULES "):])
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert loaded == []
