"""The trainer's side of the overlapped start: wait for the server's address once everything that does not
need the server is prepared.

The supervisor starts the trainer together with the server. The trainer imports, loads the tokenizer,
model, dataset and reward functions, then calls `server_url()`: it beats `waiting_for_server` (rank 0)
and polls `server_ready.json` in the attempt folder, which the supervisor writes atomically once
`GET /health` answered 200 (launcher.jobfolder.records.ServerReady). Every rank reads the file itself:
no collective is pending while a large server starts (NCCL's own timeout would end such a wait), and
the ranks meet again in GRPOTrainer's construction.

LAUNCHER_SERVER_URL, when set (a trainer run by hand), is used as it is: nothing is waited for here (the
preflight's /health check, or TRL's client, waits for the server itself). The wait is bounded by
server.startup_timeout_s, the bound the supervisor puts on the server's start; under the supervisor the
job has ended before.
"""

from __future__ import annotations

import time
from typing import Optional

from launcher.jobfolder.names import SERVER_READY
from launcher.jobfolder.progress import TrainerPhase
from launcher.jobfolder.records import read_server_ready
from launcher.train.errors import JobError
from launcher.train.job import SERVER_URL_ENV, Job
from launcher.train.report import HeartbeatWriter, say

POLL_S = 0.2  # how often server_ready.json is looked for (one stat of a small file)


def server_url(job: Job, beat: HeartbeatWriter, prepared_s: Optional[float] = None) -> str:
    """The server's URL: LAUNCHER_SERVER_URL as given, else the supervisor's handover (waited for)."""
    if job.server_url:
        return job.server_url
    bound = float(job.plan.policies.startup_timeout_s)
    beat(TrainerPhase.WAITING_FOR_SERVER, prepared_s=None if prepared_s is None else round(prepared_s, 2))
    if job.is_main:
        say(f"prepared{f' in {prepared_s:.1f} s' if prepared_s is not None else ''}; waiting for the server's "
            f"address ({SERVER_READY})")
    start = time.monotonic()
    while True:
        ready = read_server_ready(job.attempt_dir)
        if ready is not None:
            if job.is_main:
                say(f"server ready at {ready.url} (healthy after {ready.healthy_after_s:.1f} s); waited "
                    f"{time.monotonic() - start:.1f} s for it")
            return ready.url
        if time.monotonic() - start > bound:
            raise JobError(f"no server address after server.startup_timeout_s={bound:g} s: "
                           f"{job.attempt_dir / SERVER_READY} never appeared (the supervisor writes it once the "
                           f"server answers /health; to run the trainer without it, set {SERVER_URL_ENV})")
        time.sleep(POLL_S)
