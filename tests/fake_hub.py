"""A Hugging Face Hub stand-in on 127.0.0.1 for the staging tests (this machine has no network): just the
endpoints huggingface_hub's snapshot_download and list_repo_files call, serving repos held in memory.

    GET  /api/{models,datasets}/<org>/<name>/revision/<rev>        repo info: the commit, the files
    GET  /api/{models,datasets}/<org>/<name>/tree/<rev>[/<path>]   the file listing
    HEAD/GET /<org>/<name>/resolve/<rev>/<file>                    a model's file (X-Repo-Commit, ETag)
    HEAD/GET /datasets/<org>/<name>/resolve/<rev>/<file>           a dataset's file

Every request is recorded (method, path), so that a test can say what was asked for and what was not.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}  # (kind, repo_id) -> files
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, kind: str, repo_id: str, files: dict[str, bytes]) -> str:
        self.repos[(kind, repo_id)] = files
        return self.commit(kind, repo_id)

    def commit(self, kind: str, repo_id: str) -> str:
        files = self.repos[(kind, repo_id)]
        digest = hashlib.sha1(f"{kind}/{repo_id}".encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + files[name])
        return digest.hexdigest()

    def _send(self, handler, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if send_body:
            handler.wfile.write(body)

    def _answer(self, handler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append((handler.command, path))
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 6 and parts[1] in ("models", "datasets"):
            kind, repo_id, what = parts[1][:-1], "/".join(parts[2:4]), parts[4]
            files = self.repos.get((kind, repo_id))
            if files is None:
                return self._send(handler, 404, b'{"error": "Repository not found"}',
                                  {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"}, body)
            commit = self.commit(kind, repo_id)
            if what == "revision":
                info = {"id": repo_id, "sha": commit, "siblings": [{"rfilename": f} for f in sorted(files)],
                        "private": False}
                return self._send(handler, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
            if what == "tree":
                prefix = "/".join(parts[6:])
                entries = [{"type": "file", "path": f, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                           for f, c in sorted(files.items()) if f.startswith(prefix)]
                return self._send(handler, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"},
                                  body)
        kind = "dataset" if parts[0] == "datasets" else "model"
        rest = parts[1:] if kind == "dataset" else parts
        if len(rest) >= 5 and rest[2] == "resolve":
            repo_id, name = "/".join(rest[:2]), "/".join(rest[4:])
            files = self.repos.get((kind, repo_id), {})
            if name in files:
                content = files[name]
                headers = {"X-Repo-Commit": self.commit(kind, repo_id),
                           "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                           "Content-Type": "application/octet-stream"}
                return self._send(handler, 200, content, headers, body)
            return self._send(handler, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
        self._send(handler, 404, b"", {}, body)
