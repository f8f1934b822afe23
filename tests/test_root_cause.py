"""The root-cause line of a failed component's log (launcher.jobfolder.logs.root_cause) on real logs
(tests/logs/README.md says how each was made), and the failure reason that leads with it."""

from pathlib import Path
from typing import Optional

import pytest

from launcher.cli.job_state import failure_reason
from launcher.jobfolder.logs import CAUSE_CHARS, reason_with_log, root_cause
from launcher.jobfolder.records import Cause, Result, State, write_result

LOGS = Path(__file__).parent / "logs"

OFFLINE = ("OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them "
           "in the cached files.")


@pytest.mark.parametrize("log, cause", [
    ("transformers_offline.log", OFFLINE),  # chained: LocalEntryNotFoundError first, OSError last
    ("vllm_offline.log", OFFLINE),
    # worker -> engine core -> API server: the last two only say "see above"
    ("vllm_engine_core.log", "RuntimeError: Cannot find any model weights with `/tmp/tb/noweights`"),
    # accelerate re-raises the child's exit as CalledProcessError
    ("trl_accelerate.log", "ValueError: generation_batch_size (3) must be divisible by num_generations (4)."),
    # torch elastic: [rankN]: prefixes, then ChildFailedError with its "Root Cause" table
    ("trl_accelerate_2proc.log", "ValueError: generation_batch_size (6) must be divisible by num_generations (4)."),
    ("trainer_reward_keyerror.log", "KeyError: '3700'"),
    # pydantic's ValidationError says what failed on the line after it
    ("vllm_max_model_len.log", "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig: "
                               "Value error, User-specified max_model_len (4096) is greater than the derived "
                               "max_model_len (max_position_embeddings=2048.0 or model_max_length=None in model's "
                               "config.json). To allow overriding this maximum, set the env var "
                               "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with "
                               "extreme cau..."),  # cut at CAUSE_CHARS
    ("plain_python.log", "ValueError: settings are not JSON: Expecting property name enclosed in double quotes: "
                         "line 1 column 2 (char 1)"),
])
def test_root_cause_of_real_logs(log, cause):
    assert root_cause((LOGS / log).read_text()) == cause


def test_first_frame_is_never_the_cause():
    text = (LOGS / "vllm_engine_core.log").read_text()
    assert "Traceback (most recent call last):" in text
    assert not root_cause(text).startswith(("Traceback", "File", "(Worker"))


def test_without_a_traceback_the_last_error_line_srun_lines_excepted():
    text = ("[launcher.train] job smoke: TRAIN | server none\n"
            "[launcher.train] error: reward function 'my_rewards.score': no importable module in that path\n"
            "srun: error: node2: task 0: Exited with exit code 2\n")
    assert root_cause(text) == ("[launcher.train] error: reward function 'my_rewards.score': no importable "
                                "module in that path")
    oom = "loading\nslurmstepd: error: Detected 1 oom_kill event in StepId=41.1. Some of the step tasks have been " \
          "OOM Killed.\nsrun: error: node1: task 0: Out Of Memory\n"
    assert root_cause(oom).startswith("slurmstepd: error: Detected 1 oom_kill event")


def test_nothing_to_say():
    assert root_cause("") is None
    assert root_cause("INFO 12-01 22:23:52 [api_server.py:1] starting\nloading weights\n") is None


def test_only_wrappers_left_the_last_one_is_said():
    text = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
            "subprocess.CalledProcessError: Command '['python', 'x.py']' returned non-zero exit status 1.\n")
    assert root_cause(text).startswith("subprocess.CalledProcessError")


def test_a_long_line_is_cut():
    text = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: " + "x" * 2000 + "\n"
    cause = root_cause(text)
    assert len(cause) == CAUSE_CHARS and cause.endswith("...")


def test_reason_leads_with_the_cause_then_the_full_log_then_its_tail(tmp_path):
    log = tmp_path / "server.log"
    log.write_text((LOGS / "vllm_offline.log").read_text())
    reason = reason_with_log("server exited with code 1 before becoming healthy", log, lines=3)
    first, *rest = reason.splitlines()
    assert first == f"server exited with code 1 before becoming healthy: {OFFLINE} (full log: {log})"
    assert rest[0] == "last lines of server.log:"
    assert rest[-1].startswith("Check your internet connection")
    assert len(rest) == 4


def test_reason_without_a_log(tmp_path):
    reason = reason_with_log("trainer exited with code 1", tmp_path / "trainer.log")
    assert reason.splitlines() == [f"trainer exited with code 1 (full log: {tmp_path / 'trainer.log'})",
                                   "last lines of trainer.log:", "(no log)"]


# ----------------------------------------------------------------------------- where the user looks: the jobs CLI


def _attempt(job_dir: Path, result: Optional[Result] = None) -> Path:
    attempt = job_dir / "attempt-1"
    attempt.mkdir(parents=True)
    (attempt / "supervisor.log").write_text("2026-01-01T00:00:00 +   1.0s attempt 1 of job 7\n")
    if result is not None:
        write_result(attempt, result)
    return attempt


def test_jobs_cli_reason_leads_with_the_root_cause(tmp_path):
    attempt = _attempt(tmp_path)
    log = attempt / "server.log"
    log.write_text((LOGS / "vllm_engine_core.log").read_text())
    reason = reason_with_log("server exited with code 1 before becoming healthy", log)
    write_result(attempt, Result(State.FAILED, reason, Cause.SERVER_FAILED, server_rc=1))
    assert failure_reason(str(tmp_path)) == (
        "FAILED: server exited with code 1 before becoming healthy: RuntimeError: Cannot find any model weights "
        f"with `/tmp/tb/noweights` (full log: {log})")


def test_jobs_cli_reason_of_a_result_written_before_root_causes(tmp_path):
    tail = (LOGS / "transformers_offline.log").read_text().splitlines()[-20:]
    old = "server exited with code 1 before becoming healthy; last lines of server.log:\n" + "\n".join(tail)
    _attempt(tmp_path, Result(State.FAILED, old, Cause.SERVER_FAILED, server_rc=1))
    assert failure_reason(str(tmp_path)) == ("FAILED: server exited with code 1 before becoming healthy; last lines of "
                                             f"server.log: {OFFLINE}")


def test_jobs_cli_reason_when_the_batch_step_failed_before_any_attempt(tmp_path):
    out = tmp_path / "slurm-7.out"
    out.write_text("/usr/bin/python3: No module named launcher\nsrun: error: node1: task 0: Exited with exit code 1\n")
    assert failure_reason(str(tmp_path)) == f"/usr/bin/python3: No module named launcher (full log: {out})"
    out.write_text("srun: error: node1: task 0: Exited with exit code 1\n")  # nothing better: the last line
    assert failure_reason(str(tmp_path)) == f"srun: error: node1: task 0: Exited with exit code 1 (full log: {out})"
    out.write_text((LOGS / "plain_python.log").read_text())
    assert failure_reason(str(tmp_path)).startswith("ValueError: settings are not JSON: ")
