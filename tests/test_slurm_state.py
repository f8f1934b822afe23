"""sacct/squeue parsing with recorded outputs of the test cluster (Slurm 22.05): het components aggregated."""

from launcher.backends.slurm import HetSlurmInfoWatcher
from launcher.slurm.states import combine, parse_sacct, parse_squeue, sacct_command

# recorded: sacct -o JobID,State,NodeList --parsable2 -j 19 (server crashed -> job failed)
FAILED_HET = """JobID|State|NodeList
19+0|FAILED|node1
19+0.batch|FAILED|node1
19+0.0|CANCELLED|node1
19+1|FAILED|node2
19+1.1|CANCELLED+|node2
"""
# recorded right after a short het job ended: a transient plain row before the +N rows
TRANSIENT_PLAIN = """JobID|State|NodeList
29|COMPLETED|node[1-2]
"""
COMPLETED_HET = """JobID|State|NodeList
15+0|COMPLETED|node1
15+0.batch|COMPLETED|node1
15+0.0|COMPLETED|node1
15+1|COMPLETED|node2
15+1.1|COMPLETED|node2
"""
ONE_FAILED_ONE_RUNNING = """JobID|State|NodeList
40+0|RUNNING|node1
40+1|FAILED|node3
"""
PENDING_AND_PLAIN = """JobID|State|NodeList
41+0|PENDING|None assigned
41+1|PENDING|None assigned
42|CANCELLED by 0|node2
42.batch|CANCELLED|node2
"""


def states(text):
    return {job: info["State"] for job, info in parse_sacct(text).items()}


def test_het_components_aggregate_to_failed():
    info = parse_sacct(FAILED_HET)
    assert states(FAILED_HET) == {"19": "FAILED"}
    assert info["19"]["components"] == {"0": "FAILED", "1": "FAILED"}


def test_completed_het_job():
    assert states(COMPLETED_HET) == {"15": "COMPLETED"}


def test_any_failed_component_fails_the_job_even_while_another_runs():
    assert states(ONE_FAILED_ONE_RUNNING) == {"40": "FAILED"}


def test_pending_het_and_plain_cancelled():
    assert states(PENDING_AND_PLAIN) == {"41": "PENDING", "42": "CANCELLED"}


def test_transient_plain_row_is_read_but_het_rows_win():
    assert states(TRANSIENT_PLAIN) == {"29": "COMPLETED"}
    assert states(TRANSIENT_PLAIN + "29+0|COMPLETED|node1\n29+1|FAILED|node2\n") == {"29": "FAILED"}


def test_combine_order():
    assert combine(["COMPLETED", "COMPLETED"]) == "COMPLETED"
    assert combine(["COMPLETED", "TIMEOUT"]) == "TIMEOUT"
    assert combine(["RUNNING", "PENDING"]) == "RUNNING"
    assert combine(["CANCELLED by 1000", "COMPLETED"]) == "CANCELLED"
    assert combine([]) == "UNKNOWN"


def test_squeue_het_rows():
    assert parse_squeue("12+0|RUNNING\n12+1|RUNNING\n13+0|PENDING\n13+1|PENDING\n") == {"12": "RUNNING",
                                                                                      "13": "PENDING"}


def test_one_sacct_call_for_many_jobs():
    assert sacct_command(["12", "9", "30+1"]) == ["sacct", "-o", "JobID,JobName,State,ExitCode,NodeList,Elapsed,"
                                                  "Start,End", "--parsable2", "-j", "9,12,30"]


def test_watcher_reads_het_ids_as_the_job():
    """submitit's watcher keys states by the raw JobID; ours by the job id submitit holds (job.job_id)."""
    watcher = HetSlurmInfoWatcher(delay_s=0)
    assert watcher.read_info(FAILED_HET)["19"]["State"] == "FAILED"
    watcher.register_job("19")
    command = watcher._make_command()
    assert command[:4] == ["sacct", "-o", "JobID,State,NodeList", "--parsable2"] and command[-1] == "19"
