"""Rules on names, times and ports: the job name (a folder, a Slurm name), the walltime and the pre-walltime
signal, every timeout and retry count, and the ports that must not clash.
"""

from __future__ import annotations

import re

from launcher.config.schema import Backend, LaunchConfig, Mode
from launcher.validate.problems import Facts, Problem
from launcher.walltime import parse_walltime

# the name is a folder under cluster.job_root: no path separators, no "." / "..", no control characters
# and no "|": sacct's parsable output (the jobs CLI, job states) cannot delimit a job name holding it
JOB_NAME = re.compile(r"^(?!\.\.?$)[^/|\x00-\x1f\x7f]{1,100}$")
POSITIVE = ("server.startup_timeout_s", "server.health_grace_s", "trainer.watchdog_timeout_s", "trainer.sync_timeout_s",
            "cluster.checkpoint_timeout_s", "cluster.stop_grace_s", "cluster.submit_rate_per_s")
NOT_NEGATIVE = ("cluster.signal_before_end_s", "cluster.max_requeues", "cluster.submit_retries")
PORTS = ("server.port", "trainer.main_process_port", "trainer.group_port")


def _value(cfg: LaunchConfig, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def check_name(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    name = cfg.name
    if not isinstance(name, str) or not JOB_NAME.match(name):
        return [Problem(("name",), f"{name!r} names the job folder under cluster.job_root: 1-100 characters, "
                                   "no '/', no '|' (sacct's delimiter), no control characters (newlines, "
                                   "tabs), not '.' or '..'")]
    return []


def check_walltime(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    c = cfg.cluster
    try:
        seconds = parse_walltime(c.time)
    except ValueError as e:
        return [Problem(("cluster.time",), str(e))]
    problems = []
    if seconds <= 0:
        problems.append(Problem(("cluster.time",), "must be longer than 0"))
    elif c.backend == Backend.slurm and c.signal_before_end_s >= seconds:
        problems.append(Problem(
            ("cluster.time", "cluster.signal_before_end_s"),
            f"the pre-walltime signal ({c.signal_before_end_s} s before the end) would come "
            f"before the job starts: walltime is only {seconds} s"))
    return problems


def check_timeouts(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    problems = []
    for key in POSITIVE:
        if _value(cfg, key) <= 0:
            problems.append(Problem((key,), f"must be > 0, got {_value(cfg, key)}"))
    for key in NOT_NEGATIVE:
        if _value(cfg, key) < 0:
            problems.append(Problem((key,), f"must be >= 0, got {_value(cfg, key)}"))
    c = cfg.cluster
    if (c.backend == Backend.slurm and c.checkpoint_timeout_s > 0
            and 0 <= c.signal_before_end_s < c.checkpoint_timeout_s + c.stop_grace_s):
        problems.append(Problem(
            ("cluster.signal_before_end_s", "cluster.checkpoint_timeout_s", "cluster.stop_grace_s"),
            f"USR2 comes {c.signal_before_end_s} s before the walltime, but the checkpoint may take "
            f"{c.checkpoint_timeout_s:g} s and stopping {c.stop_grace_s:g} s more: the walltime would cut "
            "the checkpoint short"))
    watchdog = cfg.trainer.watchdog_timeout_s
    if 0 < watchdog < 120:
        problems.append(Problem(("trainer.watchdog_timeout_s",),
                                f"{watchdog:g} s may end a healthy job: there is no "
                                "heartbeat while a model loads or weights sync", severity="warning"))
    sync = cfg.trainer.sync_timeout_s
    if 0 < watchdog <= sync:
        problems.append(Problem(("trainer.sync_timeout_s", "trainer.watchdog_timeout_s"),
                                f"a weight sync may take {sync:g} s, but the watchdog ends the job after {watchdog:g} s "
                                "without a heartbeat: a stuck sync would be reported as a hang, not as a sync that "
                                "timed out", severity="warning"))
    return problems


def check_ports(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    problems = []
    for key in PORTS:
        port = _value(cfg, key)
        if port is not None and not 1024 <= port <= 65535:
            problems.append(Problem((key,), f"must be a port in 1024..65535 or null (pick one per job), got {port}"))
    t = cfg.trainer
    if t.group_port is not None and t.group_port == t.main_process_port:
        problems.append(Problem(("trainer.group_port", "trainer.main_process_port"),
                                f"both are {t.group_port}: the weight-sync store and accelerate's rendezvous both "
                                "listen on trainer node 0"))
    port = cfg.server.port
    if (cfg.cluster.backend == Backend.local and cfg.mode == Mode.server and port is not None
            and port in (t.group_port, t.main_process_port)):
        problems.append(Problem(("server.port", "trainer.group_port", "trainer.main_process_port"),
                                f"port {port} is used twice on this machine"))
    if cfg.server.host == "0.0.0.0":
        problems.append(Problem(("server.host",),
                                "0.0.0.0 exposes the unauthenticated vLLM development endpoints on every "
                                "interface of the node", severity="warning"))
    return problems
