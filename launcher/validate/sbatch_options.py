"""The sbatch option tables validation checks `cluster.sbatch`, `server.sbatch` and `trainer.sbatch` against:
the options the launcher renders itself, sbatch's own options and short forms, the ones refused here, and
how their values look.
"""

from __future__ import annotations

import re

# sbatch flags the launcher renders from the topology; set them through the named keys instead.
LAUNCHER_OWNED_SBATCH = {
    "nodes": "server.nodes / trainer.nodes",
    "N": "server.nodes / trainer.nodes",
    "gpus-per-node": "server.gpus_per_node / trainer.gpus_per_node",
    "gpus": "server.gpus_per_node / trainer.gpus_per_node",
    "gres": "server.gpus_per_node / trainer.gpus_per_node",
    "ntasks-per-node": "(fixed: one task per node)",
    "ntasks": "(fixed: one task per node)",
    "output": "(the job folder holds the logs)",
    "error": "(the job folder holds the logs)",
    "signal": "cluster.signal_before_end_s",
    "requeue": "cluster.max_requeues",
    "no-requeue": "cluster.max_requeues",
    "job-name": "name",
    "J": "name",
    "time": "cluster.time",
    "t": "cluster.time",
    "partition": "cluster.partition",
    "p": "cluster.partition",
    "account": "cluster.account",
    "A": "cluster.account",
    "qos": "cluster.qos",
    "constraint": "cluster.constraint",
    "C": "cluster.constraint",
    "export": "(the launcher passes the environment; see cluster.env / cluster.secret_env)",
}
# sbatch 22.05's long options (`sbatch --help` and sbatch(1)); a key outside this set would make sbatch
# exit with "unrecognized option" after the job folder was made
SBATCH_OPTIONS = frozenset("""
account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment constraint container
contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot dependency
distribution error exclude exclusive export export-file extra-node-info get-user-env gid gpu-bind gpu-freq gpus
gpus-per-node gpus-per-socket gpus-per-task gres gres-flags help hint hold ignore-pbs input job-name
kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus network
nice no-kill no-requeue nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu ntasks-per-node
ntasks-per-socket open-mode output overcommit oversubscribe parsable partition power prefer priority profile
propagate qos quiet reboot requeue reservation signal sockets-per-node spread-job switches test-only
thread-spec threads-per-core time time-min tmp uid usage use-min-nodes verbose version wait wait-all-nodes
wckey wrap""".split())
SBATCH_SHORT = {"A": "account", "C": "constraint", "D": "chdir", "F": "nodefile", "G": "gpus", "H": "hold",
                "J": "job-name", "L": "licenses", "M": "clusters", "N": "nodes", "O": "overcommit", "Q": "quiet",
                "S": "core-spec", "V": "version", "W": "wait", "a": "array", "b": "begin", "c": "cpus-per-task",
                "d": "dependency", "e": "error", "h": "help", "i": "input", "k": "no-kill", "m": "distribution",
                "n": "ntasks", "o": "output", "p": "partition", "q": "qos", "s": "oversubscribe", "t": "time",
                "v": "verbose", "w": "nodelist", "x": "exclude"}
# options that make no sense in a launcher's #SBATCH block, and why
SBATCH_REFUSED = {
    "array": "a heterogeneous job cannot be a job array; use a sweep (python -m launcher -m ...)",
    "wrap": "the launcher writes the batch script itself",
    "wait": "sbatch would block until the job ends; use cluster.wait=true",
    "test-only": "nothing would be submitted; use dry_run=true",
    "parsable": "the launcher reads sbatch's output itself",
    "help": "not a job option", "usage": "not a job option", "version": "not a job option",
    "chdir": "the job runs from the launch directory; set paths in the config instead",
    "input": "the components read nothing from stdin",
}
# options that take no value (true/false), and those whose value is optional
SBATCH_FLAGS = frozenset("contiguous hold ignore-pbs overcommit oversubscribe reboot requeue no-requeue "
                         "spread-job test-only use-min-nodes parsable quiet verbose".split())
SBATCH_OPTIONAL_VALUE = frozenset("exclusive no-kill get-user-env propagate kill-on-invalid-dep wait-all-nodes".split())
MEMORY = re.compile(r"^\d+([KMGT]B?)?$", re.I)
SLURM_NAME = re.compile(r"^[A-Za-z0-9_.,+-]+$")  # partition / account / qos (a comma list of partitions is fine)
SBATCH_FLAG = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")  # what an option name looks like (no "=", spaces)
