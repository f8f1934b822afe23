"""The trainer's requests carry the job's token (launcher.server_auth guards every vLLM endpoint but
`GET /health`).

TRL's VLLMClient makes its `requests.Session` in its constructor and uses it for every request after
`check_server` (which polls /health with a bare `requests.get`). `token_client(base)` is a subclass that
puts the token on the session at that point; `job_token()` swaps it in, over whatever client class TRL's
VLLMGeneration would build (TRL's own, or launcher.sync's CPU client), while GRPOTrainer is constructed.
Nothing else of TRL's client changes: the weight sync (NCCL on GPUs) runs as TRL wrote it.
"""

from __future__ import annotations

import contextlib

from launcher.server_auth import token_header


def token_client(base: type) -> type:
    """`base` (a VLLMClient class) whose session sends the job's token, if the environment has one."""

    class JobTokenClient(base):
        def check_server(self, *args, **kwargs):
            # the first point after the constructor made self.session and before it first uses it
            self.session.headers.update(token_header())
            return super().check_server(*args, **kwargs)

    JobTokenClient.__name__ = JobTokenClient.__qualname__ = f"JobToken{base.__name__}"
    return JobTokenClient


@contextlib.contextmanager
def job_token():
    """While GRPOTrainer is built: TRL's VLLMGeneration makes its client with the job's token."""
    import trl.generation.vllm_generation as generation

    if not token_header():
        yield  # an unprotected server (server.require_token=false): TRL's client as it is
        return
    original = generation.VLLMClient
    generation.VLLMClient = token_client(original)
    try:
        yield
    finally:
        generation.VLLMClient = original
