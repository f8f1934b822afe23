"""The supervisor's reading of its own job (scontrol/sacct text recorded on the test cluster) and its
decisions at a restart; the real cluster runs these paths in tests/integration/test_faults.py."""

import os
import stat

import pytest

from conftest import compose
from launcher.slurm import own_job as slurm_self
from launcher.jobfolder.layout import create_job_dir, write_snapshot
from launcher.plan.plan import build_plan
from launcher.supervisor.loop import JobFailed, Supervisor

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


def test_job_info_reads_the_first_occurrence_of_each_field():
    info = slurm_self.parse_job(SHOW_JOB)
    assert info.states == ["RUNNING", "PENDING"] and info.requeued
    assert info.restarts == 1 and info.nodes == ["node1", "node2"]
    assert info.preempt_time is not None and info.end_time < info.preempt_time + 11
    assert info.component_ids == ["1397", "1398"] and not info.at_walltime


def test_walltime_is_told_from_a_cancel_by_the_end_time():
    line = ("JobId=5 JobState=COMPLETING Restarts=0 TimeLimit=00:04:00 StartTime=2026-11-28T12:00:00 "
            "EndTime={end} PreemptTime=None NodeList=node1\n")
    assert slurm_self.parse_job(line.format(end="2026-11-28T12:04:00")).at_walltime
    assert not slurm_self.parse_job(line.format(end="2026-11-28T12:01:10")).at_walltime  # scancel at 1:10


def test_failed_nodes_are_down_not_drained():
    nodes = slurm_self.parse_nodes(SHOW_NODE)
    assert nodes["node2"] == ("DOWN+NOT_RESPONDING", "Not responding")
    assert nodes["node3"] == ("IDLE+DRAIN", "maint test")
    failed = {n: s for n, s in nodes.items() if slurm_self.FAILED_NODE.search(s[0])}
    assert slurm_self.describe_nodes(failed) == "node2 (DOWN+NOT_RESPONDING: Not responding)"


def _fake(bin_dir, name, body):
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def restarted_job(tmp_path, monkeypatch, tiny_model, data_file):
    """A job folder as the batch step of restart 1 sees it, with sacct saying how run 1 ended."""
    def make(previous_state: str, *overrides: str):
        cfg = compose("+experiment=smoke", "cluster=slurm", f"cluster.job_root={tmp_path / 'jobs'}",
                      f"model.name_or_path={tiny_model}", f"data.name_or_path={data_file}", *overrides)
        plan = build_plan(cfg)
        job_dir = create_job_dir(cfg["cluster"]["job_root"], plan.name)
        write_snapshot(job_dir, plan, cfg)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        _fake(bin_dir, "sacct", f'echo "77+0|{previous_state}|node1|2026-11-28T11:00:00|2026-11-28T11:05:00"\n'
                                'echo "77+0|RUNNING|node2|2026-11-28T11:06:00|Unknown"\n')
        _fake(bin_dir, "scontrol", "exit 1\n")  # no job 77 here: nothing stale to cancel
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
        monkeypatch.setenv("SLURM_JOB_ID", "77")
        return Supervisor(job_dir, backend="slurm")
    return make


def test_a_lost_batch_node_ends_the_job_at_the_restart(restarted_job):
    supervisor = restarted_job("NODE_FAIL")
    with pytest.raises(JobFailed) as failed:
        supervisor.check_restart()
    assert failed.value.cause == "node_failure"
    assert str(failed.value) == ("attempt 1 ended NODE_FAIL on node1 by Slurm's accounting (its supervisor left no "
                                 "result: its node was lost); not running again after a node failure "
                                 "(cluster.requeue_on_node_failure=false)")


def test_a_lost_batch_node_is_resumed_when_configured(restarted_job):
    supervisor = restarted_job("NODE_FAIL", "cluster.requeue_on_node_failure=true")
    supervisor.check_restart()  # runs again
    assert "attempt 1 ended NODE_FAIL on node1" in (supervisor.dir / "supervisor.log").read_text()


def test_restarts_beyond_max_requeues_end_the_job(restarted_job):
    supervisor = restarted_job("PREEMPTED", "cluster.max_requeues=0")
    with pytest.raises(JobFailed, match=r"cluster.max_requeues=0; attempt 1 ended PREEMPTED") as failed:
        supervisor.check_restart()
    assert failed.value.cause == "max_requeues"
