"""scripts/gpu/colocate_report.py, the arithmetic of the GPU colocate comparison, on job folders and event logs
written here in the shapes the launcher and scripts/gpu/grpo_by_hand.py write (no GPU needed; runs in CI)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu" / "colocate_report.py"
spec = importlib.util.spec_from_file_location("colocate_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

T0 = 1_000_000.0


def by_hand(d: Path, gaps: list[float], start: float = 50.0) -> None:
    d.mkdir(parents=True)
    t, events = T0 + start, [{"event": "trainer_ready", "t": T0 + start - 5}]
    for i, gap in enumerate(gaps, 1):
        t += gap
        events.append({"event": "step", "t": t + 0.01, "t_end": t, "step": i, "gap": gap, "reward": 0.0, "loss": 0.0})
    (d / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    # what TRL's Trainer prints per log: its own step_time (here 0.03 s less than the whole step)
    logs = [str({"loss": "0", "rewards/accuracy_reward/mean": "0", "step_time": f"{g - 0.03:.4f}"}) for g in gaps]
    (d / "trainer.log").write_text("\r".join(["progress bar"] + logs) + "\n")


def launcher(d: Path, gaps: list[float], start: float = 52.0, reward: str = "accuracy_reward") -> None:
    attempt = d / "jobs" / "smoke" / "20261202-000000" / "attempt-1"
    attempt.mkdir(parents=True)
    t, rows = T0 + start, []
    for i, gap in enumerate(gaps, 1):
        t += gap
        rows.append({"kind": "train", "step": i, "step_time_s": gap, "time": t, "reward": 0.0, "loss": 0.0,
                     "trl": {"step_time": gap - 0.028, f"rewards/{reward}/mean": 0.0}})
    (attempt / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (attempt / "result.json").write_text(json.dumps({"state": "COMPLETED", "reason": "trainer finished"}))
    (attempt / "trainer.log").write_text("INFO torch.compile takes 31.2 s in total\nnoise\n")


def run_all(tmp_path: Path, launcher_step: float, last_reward: str = "accuracy_reward") -> dict:
    order = ["by-hand", "launcher", "launcher", "by-hand", "launcher", "by-hand"]
    for i, who in enumerate(order, 1):
        d = tmp_path / f"colo-{i}"
        gaps = [9.0] + [launcher_step if who == "launcher" else 1.0] * 31  # step 1: the warm-up, left out
        if who == "launcher":
            launcher(d, gaps, reward=last_reward if i == 5 else "accuracy_reward")
        else:
            by_hand(d, gaps)
        cache = tmp_path / "cache" / who
        before = 0 if not cache.exists() else 123
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "x").write_text("compiled")
        assert report.main(["run", "--who", who, "--dir", str(d), "--index", str(i), "--t0", str(T0), "--rc", "0",
                            "--cache", str(cache), "--cache-bytes-before", str(before)]) == 0
    assert report.main(["summary", str(tmp_path), "--out", str(tmp_path / "s.json")]) == 0
    return json.loads((tmp_path / "s.json").read_text())


def test_equal_steps_are_within_two_percent(tmp_path):
    s = run_all(tmp_path, launcher_step=1.01)
    a = s["all"]
    assert a["order"] == "B L L B L B" and "same_reward" not in s
    assert a["by-hand"]["median_step_s"] == 1.0 and a["launcher"]["median_step_s"] == 1.01
    assert a["by-hand"]["steps_measured"] == 93  # 3 runs x steps 2..32
    assert a["launcher_share"] == pytest.approx(0.01) and a["within_2_percent"] is True
    # outside TRL's step: 0.03 s by hand, 0.028 s through the launcher (the fixtures' TRL step_time)
    assert a["by-hand"]["median_outside_trl_step_s"] == pytest.approx(0.03)
    assert a["by-hand"]["median_trl_step_time_s"] == pytest.approx(0.97)
    assert a["outside_trl_launcher_minus_by_hand_s"] == pytest.approx(-0.002)
    # first step: start (50 s / 52 s) + the 9 s warm-up step; cold only on each method's first run
    st = s["startup"]
    assert st["by-hand"]["first_step_cold_s"] == [59.0] and st["by-hand"]["first_step_warm_s"] == [59.0, 59.0]
    assert st["launcher"]["first_step_cold_s"] == [61.0] and len(st["launcher"]["first_step_warm_s"]) == 2
    run2 = json.loads((tmp_path / "colo-2" / "run.json").read_text())
    assert run2["job_state"] == "COMPLETED" and any("torch.compile" in line for line in run2["vllm"])


def test_a_slower_launcher_is_not_within_two_percent(tmp_path):
    s = run_all(tmp_path, launcher_step=1.05)
    assert s["all"]["launcher_share"] == pytest.approx(0.05) and s["all"]["within_2_percent"] is False


def test_a_launcher_run_with_another_reward_is_left_out_of_like_for_like(tmp_path):
    s = run_all(tmp_path, launcher_step=1.0, last_reward="letter_share")
    assert s["all"]["launcher"]["runs"] == ["1.2", "1.3", "1.5"]
    assert s["same_reward"]["launcher"]["runs"] == ["1.2", "1.3"] and s["same_reward"]["order"] == "B L L B B"


def test_rounds_from_several_logdirs_keep_their_order(tmp_path):
    run_all(tmp_path / "r1", launcher_step=1.0)
    run_all(tmp_path / "r2", launcher_step=1.0)
    assert report.main(["summary", str(tmp_path / "r1"), str(tmp_path / "r2"), "--out", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert [r["name"] for r in s["runs"]][5:7] == ["1.6", "2.1"] and s["all"]["by-hand"]["steps_measured"] == 186


def test_a_run_without_steps_fails(tmp_path):
    d = tmp_path / "colo-1"
    by_hand(d, [])
    assert report.main(["run", "--who", "by-hand", "--dir", str(d), "--index", "1", "--t0", str(T0), "--rc", "0"]) == 1
    assert json.loads((d / "run.json").read_text())["ok"] is False
