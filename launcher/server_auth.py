"""The job's token in front of every vLLM endpoint: an ASGI middleware that vLLM's API server loads
(`--middleware launcher.server_auth.JobTokenMiddleware`, added by the server wrapper).

TRL's server mode needs vLLM's development mode, whose endpoints (/update_weights, /collective_rpc,
/init_weight_transfer_engine, /sleep, ...) have no authentication, and `--api-key` guards /v1/* only. The
middleware wraps the whole app, so it sees every request before any route does: a request passes only
when its X-Launcher-Job-Token header equals the token the supervisor put in the environment
(LAUNCHER_SERVER_TOKEN) for this attempt. One exemption, `GET /health`: it tells only that the server
is alive, and TRL's client polls it with a bare `requests.get` that carries no header of ours. A different header than vLLM's `Authorization`
keeps a user's own `--api-key` working beside it. Refusals are logged (method, path, peer; never the
token or what was sent). It fails closed: without a token in the environment the server does not start.
Stdlib only (vLLM's processes import it).
"""

from __future__ import annotations

import hmac
import json
import os
import sys

TOKEN_ENV = "LAUNCHER_SERVER_TOKEN"
HEADER = "X-Launcher-Job-Token"
_HEADER_KEY = HEADER.lower().encode()
MIDDLEWARE = "launcher.server_auth.JobTokenMiddleware"  # what vLLM's --middleware imports


def token_header(env=None) -> dict[str, str]:
    """The header a request of this job carries ({} when the job's server is not protected)."""
    token = (os.environ if env is None else env).get(TOKEN_ENV, "")
    return {HEADER: token} if token else {}


def authorized(headers: list[tuple[bytes, bytes]], token: bytes) -> bool:
    """Whether the request's headers carry the token (constant-time; one header exactly)."""
    sent = [value for key, value in headers if key.lower() == _HEADER_KEY]
    return len(sent) == 1 and hmac.compare_digest(sent[0], token)


def _liveness(scope) -> bool:
    return scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") == "/health"


class JobTokenMiddleware:
    """ASGI middleware: 401 for any HTTP or websocket request without the job's token."""

    def __init__(self, app, token: str | None = None):
        self.app = app
        token = os.environ.get(TOKEN_ENV, "") if token is None else token
        if not token:
            raise RuntimeError(f"{TOKEN_ENV} is not set: the job's server would be open to anyone on the network")
        self.token = token.encode()

    async def __call__(self, scope, receive, send):
        if (scope["type"] not in ("http", "websocket") or _liveness(scope)
                or authorized(scope.get("headers", []), self.token)):
            await self.app(scope, receive, send)
            return
        peer = scope.get("client") or ("?", 0)
        print(f"launcher: refused {scope.get('method', 'WEBSOCKET')} {scope.get('path', '?')} from "
              f"{peer[0]}:{peer[1]}: no valid {HEADER}", file=sys.stderr, flush=True)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": f"this server belongs to one job; send its {HEADER}"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
