"""A stand-in for `trl vllm-serve` in tests/test_sync_cpu.py: the HTTP routes TRL's client uses for weight
sync, each handled by the launcher's real gloo engine (launcher.sync.engine) in one thread per "worker"
(TP/DP ranks emulated by parallel_config), loading into a small torch model. vLLM's layerwise reload is
vLLM's own and needs a vLLM model: start/finish only record that they ran here (the real server test
covers them).

    python tests/sync_stub_server.py PORT_FILE TP DP [BACKEND]   # writes its port to PORT_FILE; ends at stdin EOF
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import torch

from launcher.sync import BACKEND
from launcher.sync.engine import GlooWeightTransferEngine


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)).to(torch.bfloat16)

    def load_weights(pairs):
        params = dict(model.named_parameters())
        for name, tensor in pairs:
            with torch.no_grad():
                params[name].copy_(tensor)  # casts float32 -> bfloat16, as vLLM's loaders do
        return {name for name, _ in pairs}

    model.load_weights = load_weights
    return model


class Engine(GlooWeightTransferEngine):
    def start_weight_update(self) -> None:
        self.started = getattr(self, "started", 0) + 1

    def finish_weight_update(self) -> None:
        self.finished = getattr(self, "finished", 0) + 1


def main() -> None:
    port_file, tp, dp = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    backend = sys.argv[4] if len(sys.argv) > 4 else BACKEND  # what /server_info reports
    engines = []
    for dp_index in range(dp):
        for rank in range(tp):
            config = SimpleNamespace(parallel_config=SimpleNamespace(data_parallel_index=dp_index, world_size=tp,
                                                                     rank=rank), model_config=None)
            engines.append(Engine(SimpleNamespace(backend=BACKEND), config, torch.device("cpu"), tiny_model()))
    pool = ThreadPoolExecutor(max_workers=len(engines))

    def on_all(method: str, *args):  # vLLM's collective_rpc: every worker, concurrently
        for future in [pool.submit(getattr(e, method), *args) for e in engines]:
            future.result()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, body: dict, code: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/health":
                return self.reply({})
            if path == "/v1/models":
                return self.reply({"data": [{"id": "stub"}]})
            if path == "/server_info":
                return self.reply({"vllm_config": {"weight_transfer_config": {"backend": backend}}})
            if path == "/get_world_size":
                return self.reply({"world_size": len(engines)})
            if path == "/weights":  # what the test compares: every worker's parameters
                return self.reply({"workers": [{n: p.float().tolist() for n, p in e.model.named_parameters()}
                                               for e in engines],
                                   "started": [getattr(e, "started", 0) for e in engines],
                                   "finished": [getattr(e, "finished", 0) for e in engines]})
            self.reply({"error": path}, 404)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            path = self.path.split("?")[0]
            try:
                if path == "/init_weight_transfer_engine":
                    on_all("init_transfer_engine", engines[0].parse_init_info(body["init_info"]))
                elif path == "/start_weight_update":
                    on_all("start_weight_update")
                elif path == "/update_weights":
                    on_all("update_weights", body["update_info"])
                elif path == "/finish_weight_update":
                    on_all("finish_weight_update")
                elif path != "/reset_prefix_cache":
                    return self.reply({"error": path}, 404)
            except Exception as e:  # noqa: BLE001
                return self.reply({"error": f"{type(e).__name__}: {e}"}, 400)
            self.reply({})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file.write_text(str(server.server_address[1]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the test closes stdin
    server.shutdown()


if __name__ == "__main__":
    main()
