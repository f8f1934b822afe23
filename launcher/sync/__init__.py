"""Weight sync from a CPU trainer to the vLLM CPU server (TRL's NCCL path needs CUDA): a gloo transport
behind vLLM's weight-transfer engine registry, and the matching trainer side. Small enough to delete
once TRL or vLLM ship a CPU path of their own; on CUDA none of it runs (TRL's NCCL path stays as it is).

  wire.py        the gloo group (TCPStore rendezvous hosted by trainer rank 0, ProcessGroupGloo used
                 directly) and the byte buckets both sides cut the same way from the metadata
  engine.py      the server side: a vLLM WeightTransferEngine ("launcher_gloo"), in each vLLM worker
  client.py      the trainer side: TRL's VLLMClient with a gloo communicator, swapped in on CPU only
  vllm_plugin.py the vllm.general_plugins entry point that registers the engine in vLLM's processes

The flow per step is TRL's, over the same HTTP routes: /init_weight_transfer_engine once (the workers
join the trainer's group), then /start_weight_update, /update_weights (posted while trainer rank 0
broadcasts the buckets), /finish_weight_update. This module is light (no torch): the server wrapper
reads SERVER_ARGS from it on the login-node-free path.
"""

import json

BACKEND = "launcher_gloo"  # the weight_transfer_config backend name, registered by launcher.sync.vllm_plugin
# appended to `trl vllm-serve` on CPU: TRL passes `--weight-transfer-config {"backend": "nccl"}` first, and
# argparse keeps the last occurrence
SERVER_ARGS = ("--weight-transfer-config", json.dumps({"backend": BACKEND}))
# test/debug switch: set to 1 in the trainer's environment and the CPU client sends nothing (the server keeps
# its initial weights) -- what the counter-test of "the server follows the trainer" uses
SKIP_SYNC_ENV = "DEBUG_SKIP_WEIGHT_SYNC"
# test/debug switch for faults injected mid-update (tests/integration/test_sync_faults.py): set to N and the
# trainer's N-th sync pauses right after /start_weight_update, writes PAUSED_MARKER in the job folder and waits
# there until RESUME_MARKER appears (or the process is killed). Once per job: an attempt that finds the marker
# (a requeued one) does not pause again.
PAUSE_SYNC_ENV = "DEBUG_PAUSE_WEIGHT_SYNC"
PAUSED_MARKER = "debug-weight-sync.paused"
RESUME_MARKER = "debug-weight-sync.resume"
