"""The status line reads only the tail of a long metrics file, and still shows the latest values; while the
server starts it shows the trainer's phase (the overlapped start)."""

import json
import time

from launcher.jobfolder.progress import append_metrics, read_metrics, write_heartbeat
from launcher.show.watch import describe


def test_tail_of_a_long_metrics_file(tmp_path):
    attempt = tmp_path / "attempt-1"
    for step in range(1, 5001):
        append_metrics(attempt, {"kind": "train", "step": step, "reward": step / 10000})
    assert len(read_metrics(attempt)) == 5000
    tail = read_metrics(attempt, tail_bytes=4096)
    assert 0 < len(tail) < 100 and tail[-1]["step"] == 5000
    assert [r["step"] for r in tail] == list(range(5001 - len(tail), 5001))  # whole rows only, in order
    (attempt / "status.json").write_text(json.dumps({"phase": "trainer_running", "server_url": "http://x:1"}))
    write_heartbeat(attempt, "step", 5000)
    assert describe(tmp_path) == ("[attempt-1] server healthy, trainer running, phase step, step 5000, "
                                  "reward 0.500")


def test_while_the_server_starts_the_line_shows_what_the_trainer_does(tmp_path):
    attempt = tmp_path / "attempt-1"
    attempt.mkdir()
    (attempt / "status.json").write_text(json.dumps({"phase": "server_starting", "since": time.time() - 12}))
    line = describe(tmp_path)
    assert line.startswith("[attempt-1] server starting (1") and line.endswith(" s)")
    write_heartbeat(attempt, "waiting_for_server")
    line = describe(tmp_path)
    assert line.startswith("[attempt-1] server starting (1") and line.endswith(" s), trainer waiting_for_server")
