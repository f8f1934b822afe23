"""The supervisor's reading of its own job (scontrol/sacct text recorded on the test cluster), the
commands it runs through OwnJob (fake scontrol/sacct on PATH), and its decisions at a restart made
from what those commands say; the real cluster runs these paths in tests/integration/test_faults.py."""

import datetime as dt

import pytest

from conftest import fake_executable
from launcher.jobfolder.records import Cause, State
from launcher.slurm import own_job as slurm_self
from launcher.supervisor.loop import Supervisor
from test_supervisor import FakeClock, FakeRunner, make_plan

# `scontrol show job -o 1397` during preemption GraceTime (two het components); the Comment field carries
# a spoofed "JobState=FAKE" that must not be read
SHOW_JOB = (
    "JobId=1397 HetJobId=1397 HetJobOffset=0 JobName=x UserId=root(0) JobState=RUNNING Reason=None Requeue=1 "
    "TimeLimit=00:10:00 StartTime=2026-11-28T11:53:40 "
    "Restarts=1 EndTime=2026-11-28T11:54:02 PreemptTime=2026-11-28T11:53:52 NodeList=node1 BatchHost=node1 "
    "Comment=x JobState=FAKE \"q\" $(y)  StdOut=/tmp/o\n"
    "JobId=1398 HetJobId=1397 HetJobOffset=1 JobName=x UserId=root(0) JobState=PENDING Reason=BeginTime "
    "Requeue=1 Restarts=1 EndTime=2026-11-28T11:54:12 PreemptTime=None NodeList=node2 BatchHost=node2 Comment=x\n")
SHOW_NODE = (
    "NodeName=node2 Arch=x86_64 State=DOWN+NOT_RESPONDING ThreadsPerCore=1 Partitions=debug "
    "Reason=Not responding [root@2026-11-28T11:56:28]\n"
    "NodeName=node3 Arch=x86_64 State=IDLE+DRAIN ThreadsPerCore=1 Reason=maint test [root@2026-11-28T12:02:51]\n"
    "NodeName=node1 Arch=x86_64 State=MIXED ThreadsPerCore=1\n")


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_job_info_reads_the_first_occurrence_of_each_field():
    info = slurm_self.parse_job(SHOW_JOB)
    assert info.states == ["RUNNING", "PENDING"] and info.requeued
    assert info.restarts == 1 and info.nodes == ["node1", "node2"]
    assert info.preempt_time is not None and info.end_time < info.preempt_time + 11
    assert info.component_ids == ["1397", "1398"]
    assert not info.at_walltime(epoch("2026-11-28T11:54:02"))  # EndTime is the GraceTime's end, not the limit's


def test_walltime_is_told_from_a_cancel_by_the_end_time():
    line = ("JobId=5 JobState=COMPLETING Restarts=0 TimeLimit=00:04:00 StartTime=2026-11-28T12:00:00 "
            "EndTime={end} PreemptTime=None NodeList=node1\n")
    at_limit = slurm_self.parse_job(line.format(end="2026-11-28T12:04:00"))
    assert at_limit.at_walltime(epoch("2026-11-28T12:04:00"))
    assert not at_limit.at_walltime(epoch("2026-11-28T12:02:00"))  # the limit is still 2 minutes away
    cancelled = slurm_self.parse_job(line.format(end="2026-11-28T12:01:10"))  # scancel at 1:10
    assert not cancelled.at_walltime(epoch("2026-11-28T12:01:10"))


def test_failed_nodes_are_down_not_drained():
    nodes = slurm_self.parse_nodes(SHOW_NODE)
    assert nodes["node2"] == ("DOWN+NOT_RESPONDING", "Not responding")
    assert nodes["node3"] == ("IDLE+DRAIN", "maint test")
    failed = {n: s for n, s in nodes.items() if slurm_self.FAILED_NODE.search(s[0])}
    assert slurm_self.describe_nodes(failed) == "node2 (DOWN+NOT_RESPONDING: Not responding)"


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """Fake scontrol/sacct/squeue on PATH; returns a function that writes one of them."""
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return lambda name, body: fake_executable(bin_dir, name, body)


def test_own_job_reads_its_job_nodes_and_accounting(fake_slurm, tmp_path):
    (tmp_path / "job.txt").write_text(SHOW_JOB)
    (tmp_path / "node.txt").write_text(SHOW_NODE)
    fake_slurm("scontrol", f'[ "$2" = job ] && exec cat {tmp_path}/job.txt\n[ "$2" = node ] && exec cat {tmp_path}/node.txt\n')
    fake_slurm("sacct", 'echo "1397+0|PREEMPTED|node1|a|b"; echo "1397+1|PREEMPTED|node2|a|b"; echo "1397.batch|X|n|a|b"\n')
    job = slurm_self.OwnJob("1397")
    info = job.info()
    assert info.component_ids == ["1397", "1398"] and info.requeued
    assert job.failed_nodes(info.nodes) == {"node2": ("DOWN+NOT_RESPONDING", "Not responding")}
    assert job.previous_runs() == [{"JobID": "1397+0", "State": "PREEMPTED", "NodeList": "node1", "Start": "a",
                                    "End": "b"}]


def test_own_job_answers_none_when_slurm_does_not(fake_slurm):
    fake_slurm("scontrol", 'echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1\n')
    fake_slurm("sacct", "exit 1\n")
    job = slurm_self.OwnJob("5")
    assert job.info() is None and job.failed_nodes(["node1"]) == {} and job.previous_runs() == []


def test_a_permanent_requeue_failure_is_reported_at_once(fake_slurm):
    fake_slurm("scontrol", 'echo "scontrol: error: Requested operation is presently disabled for job 5" >&2; exit 1\n')
    ok, message = slurm_self.OwnJob("5").requeue(deadline=float("inf"))
    assert not ok and message == "scontrol requeue failed: scontrol: error: Requested operation is presently disabled for job 5"


@pytest.fixture
def restarted_job(tmp_path, fake_slurm):
    """The batch step of restart 1 of job 77, with sacct saying how run 1 ended (and no result.json from it)."""
    def make(previous_state: str, **policies) -> Supervisor:
        fake_slurm("sacct", f'echo "77+0|{previous_state}|node1|2026-11-28T11:00:00|2026-11-28T11:05:00"\n'
                            'echo "77+0|RUNNING|node2|2026-11-28T11:06:00|Unknown"\n')
        fake_slurm("scontrol", "exit 1\n")  # no job 77 here: nothing stale to cancel
        (tmp_path / "job").mkdir(exist_ok=True)
        clock = FakeClock()
        runner = FakeRunner(clock)
        runner.scripts["server"].append(lambda step: step.exit(1, "stops here"))
        return Supervisor(tmp_path / "job", "slurm", plan=make_plan(**policies), runner=runner, clock=clock,
                          restarts=1, job_id="77", install_signals=False)
    return make


def test_a_lost_batch_node_ends_the_job_at_the_restart(restarted_job):
    result = restarted_job("NODE_FAIL").run()
    assert (result.state, result.cause) == (State.FAILED, Cause.NODE_FAILURE)
    assert result.reason == ("attempt 1 ended NODE_FAIL on node1 by Slurm's accounting (its supervisor left no "
                             "result: its node was lost); not running again after a node failure "
                             "(cluster.requeue_on_node_failure=false)")
    assert result.attempt == 2


def test_a_lost_batch_node_is_resumed_when_configured(restarted_job):
    supervisor = restarted_job("NODE_FAIL", requeue_on_node_failure=True)
    result = supervisor.run()
    assert result.cause is Cause.SERVER_FAILED  # it went on to start the server
    assert "attempt 1 ended NODE_FAIL on node1" in (supervisor.dir / "supervisor.log").read_text()


def test_restarts_beyond_max_requeues_end_the_job(restarted_job):
    result = restarted_job("PREEMPTED", max_requeues=0).run()
    assert result.cause is Cause.MAX_REQUEUES
    assert "cluster.max_requeues=0; attempt 1 ended PREEMPTED" in result.reason
