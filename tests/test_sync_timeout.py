"""trainer.sync_timeout_s and the sync's fault hooks, in process (no server): the key is validated and reaches
the plan; a failing sync raises WeightSyncFailed naming the phase and the bound; the debug pause waits once
per job; resume.json's optimizer digest is the one a checkpoint's optimizer.pt gives (and tells states apart).
The faults themselves, on the real cluster: tests/integration/test_sync_faults.py."""

from __future__ import annotations

import threading

import pytest

from conftest import compose
from launcher.plan.build import build_plan
from launcher.validate.rules import validate


def base(tiny_model, data_file, *extra):
    return ("+experiment=deepmath", "cluster=slurm", f"model.name_or_path={tiny_model}",
            f"data.name_or_path={data_file}", *extra)


def test_sync_timeout_is_validated_and_reaches_the_plan(tiny_model, data_file):
    found = [p for p in validate(compose(*base(tiny_model, data_file, "trainer.sync_timeout_s=0")))
             if p.severity == "error"]
    assert [(p.keys, p.message) for p in found] == [(("trainer.sync_timeout_s",), "must be > 0, got 0.0")]
    warned = [str(p) for p in validate(compose(*base(tiny_model, data_file, "trainer.sync_timeout_s=2000")))]
    assert any("trainer.sync_timeout_s" in w and "watchdog" in w for w in warned), warned
    assert not any("sync_timeout_s" in str(p) for p in validate(compose(*base(tiny_model, data_file))))
    plan = build_plan(compose(*base(tiny_model, data_file, "trainer.sync_timeout_s=42")))
    assert plan.policies.sync_timeout_s == 42.0
    assert build_plan(compose(*base(tiny_model, data_file))).policies.sync_timeout_s == 300.0


def test_a_failed_sync_names_the_phase_and_the_bound():
    from launcher.train.callback import WeightSyncFailed, hook_weight_sync, sync_failure

    class Stuck:
        def sync_weights(self):
            raise TimeoutError("gloo broadcast timed out")

    ends = []
    gen = Stuck()
    hook_weight_sync(gen, lambda: None, lambda s, ok: ends.append(ok),
                     lambda s, e: sync_failure(5, s, 15.0, e))
    with pytest.raises(WeightSyncFailed) as info:
        gen.sync_weights()
    assert str(info.value).startswith("weight sync to the server failed in phase 'weight_sync' before step 5, after ")
    assert "(trainer.sync_timeout_s=15 s): TimeoutError: gloo broadcast timed out" in str(info.value)
    assert ends == [False]
    # counter-check: without a failure message (TRL's NCCL path untouched) the error passes as it was
    plain = Stuck()
    hook_weight_sync(plain, lambda: None, lambda s, ok: None)
    with pytest.raises(TimeoutError):
        plain.sync_weights()


def test_the_debug_pause_waits_for_the_resume_marker_once_per_job(tmp_path, monkeypatch):
    from launcher.sync import PAUSED_MARKER, RESUME_MARKER
    from launcher.sync.client import CpuVLLMClient

    monkeypatch.setenv("LAUNCHER_JOB_DIR", str(tmp_path))
    client = object.__new__(CpuVLLMClient)
    client.syncs = 3
    paused = threading.Thread(target=client._debug_pause)
    paused.start()
    paused.join(2.0)
    assert paused.is_alive() and (tmp_path / PAUSED_MARKER).exists()  # waiting inside the update
    (tmp_path / RESUME_MARKER).write_text("go on")
    paused.join(5.0)
    assert not paused.is_alive()
    (tmp_path / RESUME_MARKER).unlink()
    again = threading.Thread(target=client._debug_pause)  # a requeued attempt: the marker is there already
    again.start()
    again.join(5.0)
    assert not again.is_alive()


def test_the_optimizer_digest_matches_a_saved_state_and_tells_states_apart(tmp_path):
    import torch

    from launcher.train.resume_record import optimizer_state_digest

    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")  # what transformers writes in a checkpoint
    loaded = torch.load(tmp_path / "optimizer.pt", map_location="cpu", weights_only=True)
    assert optimizer_state_digest(optimizer.state_dict()["state"]) == optimizer_state_digest(loaded["state"])
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    assert optimizer_state_digest(optimizer.state_dict()["state"]) != optimizer_state_digest(loaded["state"])


def test_a_sync_that_outlasts_the_watchdog_is_reported_in_phase_weight_sync():
    """When the watchdog fires first (trainer.sync_timeout_s not below it: validation warns), the reason names
    the sync's phase from the heartbeat the callback writes at the sync's begin."""
    from launcher.jobfolder.progress import Heartbeat, TrainerPhase
    from launcher.supervisor.monitors import TrainerWatchdog

    watchdog = TrainerWatchdog(30, 0.0)
    watchdog.update(1.0, Heartbeat(TrainerPhase.WEIGHT_SYNC.value, 4, 1.0, extra={"stage": "begin"}))
    assert watchdog.update(20.0, None) is None
    end = watchdog.update(40.0, None)
    assert end.reason == ("trainer made no progress for more than trainer.watchdog_timeout_s=30 s; stalled in "
                          "phase 'weight_sync' at step 4")
