"""The trainer's exit codes and the two failures that map to them (everything else is exit 1).

0 trained to the end, stopped for a requested checkpoint, or preflight passed;
1 training failed (an exception: traceback on stderr, heartbeat phase "failed");
2 the job is unusable: LAUNCHER_JOB_DIR unset, plan.json missing or unreadable, bad GRPOConfig kwargs,
  no server URL, a reward function that cannot be imported (JobError);
3 preflight failed: server unreachable or unhealthy, generation or a reward function failed (PreflightFailed);
4 a reward function ran past reward.timeout_s (launcher.train.scoring: stacks saved, heartbeat "failed" names it).
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_JOB = 2
EXIT_PREFLIGHT_FAILED = 3
EXIT_REWARD_STALLED = 4


class JobError(Exception):
    """The job folder, its plan or the environment the launcher set cannot be used (exit 2)."""


class PreflightFailed(Exception):
    """The server or the generate/score round trip failed (exit 3)."""
