"""The login-node install: pip and uv both install a light launcher whose wheel carries conf/."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "trl", "vllm", "transformers", "datasets")


def check_light_install(venv: Path, tmp_path: Path) -> None:
    python = venv / "bin" / "python"
    site = next((venv / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.iterdir()}
    assert not installed & set(HEAVY), installed & set(HEAVY)
    out = subprocess.run([str(python), "-m", "launcher", "+experiment=deepmath", "cluster=slurm", "dry_run=true"],
                         capture_output=True, text=True, cwd=tmp_path)  # outside the checkout: the wheel's conf/
    assert out.returncode == 0, out.stderr
    assert "#SBATCH hetjob" in out.stdout
    assert (site / "launcher" / "conf" / "experiment" / "deepmath.yaml").is_file()


@pytest.mark.parametrize("tool", ["pip", "uv"])
def test_base_install_is_light_and_carries_conf(tmp_path, tool):
    venv = tmp_path / "venv"
    if tool == "pip":
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(REPO)]
    else:
        uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        subprocess.run([uv, "venv", "-q", str(venv)], check=True)
        cmd = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(REPO)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    check_light_install(venv, tmp_path)
