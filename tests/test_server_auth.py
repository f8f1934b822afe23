"""The job-token middleware in front of vLLM's endpoints, driven as vLLM's ASGI server drives it."""

from __future__ import annotations

import asyncio

import pytest

from launcher.server_auth import HEADER, TOKEN_ENV, JobTokenMiddleware, authorized, token_header


async def _app(scope, receive, send):  # the routes behind the middleware: answer 200
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"inner"})


def _request(middleware, path: str, headers: list[tuple[bytes, bytes]], method: str = "POST") -> tuple[int, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers, "client": ("10.0.0.9", 4242)}
    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("path", ["/health", "/update_weights", "/init_weight_transfer_engine", "/collective_rpc",
                                  "/v1/completions", "/server_info", "/sleep"])
def test_every_endpoint_needs_the_token(path, capsys):
    guard = JobTokenMiddleware(_app, token="s3cret-token")
    assert _request(guard, path, []) [0] == 401
    assert _request(guard, path, [(b"x-launcher-job-token", b"wrong")])[0] == 401
    assert _request(guard, path, [(b"authorization", b"Bearer s3cret-token")])[0] == 401  # vLLM's header is not ours
    assert _request(guard, path, [(b"x-launcher-job-token", b"s3cret-token")]) == (200, b"inner")
    log = capsys.readouterr().err
    assert f"refused POST {path} from 10.0.0.9:4242" in log and "s3cret" not in log and "wrong" not in log


def test_two_token_headers_are_refused():
    guard = JobTokenMiddleware(_app, token="t")
    assert _request(guard, "/health", [(b"x-launcher-job-token", b"t"), (b"x-launcher-job-token", b"u")])[0] == 401


def test_without_a_token_the_server_does_not_start(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(RuntimeError, match=TOKEN_ENV):
        JobTokenMiddleware(_app)
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert _request(JobTokenMiddleware(_app), "/health", [(b"x-launcher-job-token", b"from-env")])[0] == 200


def test_the_header_clients_send():
    assert token_header({TOKEN_ENV: "abc"}) == {HEADER: "abc"}
    assert token_header({}) == {}
    assert authorized([(HEADER.encode(), b"abc")], b"abc") and not authorized([], b"abc")


def test_only_get_health_is_exempt():
    guard = JobTokenMiddleware(_app, token="t")
    assert _request(guard, "/health", [], method="GET") == (200, b"inner")  # liveness only: TRL polls it bare
    assert _request(guard, "/health", [], method="POST")[0] == 401
    assert _request(guard, "/health/", [], method="GET")[0] == 401
    assert _request(guard, "/server_info", [], method="GET")[0] == 401


def _plan(*overrides: str):
    from test_containers import _plan as plan_of  # the deepmath experiment on a production-like partition

    return plan_of(*overrides)


def test_the_wrapper_guards_the_server_unless_require_token_is_off():
    from launcher.components.serve import MissingToken, guard_args
    from launcher.server_auth import MIDDLEWARE

    protected = _plan()
    assert guard_args(protected, {TOKEN_ENV: "t"}) == ["--middleware", MIDDLEWARE]
    with pytest.raises(MissingToken, match="server.require_token=false opens the server"):
        guard_args(protected, {})  # fails closed: no token, no server
    # the counter-case: an open server gets no guard, with or without a token in its environment
    assert guard_args(_plan("server.require_token=false"), {TOKEN_ENV: "t"}) == []
    assert guard_args(_plan("server.require_token=false"), {}) == []
