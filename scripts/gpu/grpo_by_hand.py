#!/usr/bin/env python3
"""Plain TRL GRPO training, written the way TRL's docs show it: the baseline the launcher is compared with.

Run by scripts/gpu/by-hand-baseline under `accelerate launch`, against a `trl vllm-serve` started by hand:

    CUDA_VISIBLE_DEVICES=0 accelerate launch --num_processes 1 scripts/gpu/grpo_by_hand.py \
        --model $SMOKE/model --data $SMOKE/data/train.jsonl --port 8000 --steps 8 --events ev.jsonl

    python scripts/gpu/grpo_by_hand.py --model M --data D --mode none --cpu --steps 1   # CPU dry run, no vLLM

Writes one JSON line per event to --events (rank 0), each with `t` = time.time():
    start, imports_done, trainer_ready, step (step, dt = wall time of that optimizer step, loss ...),
    train_done, error (type, message, traceback), end (ok, wall_s)
Reward: TRL's own `accuracy_reward` (math_verify on \\boxed{...}, the DeepMath recipe) plus a digit-share shaping
reward, so that a random-weight model still gets reward variance (and non-zero advantages) in every group.
"""

import argparse
import json
import os
import tempfile
import time
import traceback

T_START = time.time()
ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--data", required=True, help="jsonl: `prompt` (chat messages or text) + `solution`; "
                "DeepMath's raw `question` / `final_answer` columns are mapped to them")
ap.add_argument("--mode", choices=["server", "colocate", "none"], default="server")
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", type=int, default=8000)
ap.add_argument("--group-port", type=int, default=51216)
ap.add_argument("--server-timeout", type=float, default=240)
ap.add_argument("--steps", type=int, default=8)
ap.add_argument("--batch", type=int, default=8, help="per-device prompts x generations per step")
ap.add_argument("--generations", type=int, default=4)
ap.add_argument("--max-completion", type=int, default=32)
ap.add_argument("--gpu-mem", type=float, default=0.3, help="colocate mode: vLLM's share of the GPU")
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--cpu", action="store_true")
ap.add_argument("--rewards", default="accuracy,digits",
                help="accuracy (TRL's accuracy_reward, what the launcher's smoke experiment uses) and/or digits")
ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "grpo_by_hand"))
ap.add_argument("--events", default=None, help="JSON-lines event log (rank 0)")
args = ap.parse_args()
RANK = int(os.environ.get("RANK", "0"))


def event(kind, **kw):
    rec = {"event": kind, "t": round(time.time(), 3), "since_start_s": round(time.time() - T_START, 3), **kw}
    print("EVENT", json.dumps(rec, default=str), flush=True)
    if args.events and RANK == 0:
        with open(args.events, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")


event("start", pid=os.getpid(), mode=args.mode, steps=args.steps,
      cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
ok = False
try:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback

    import trl
    from trl import GRPOConfig, GRPOTrainer
    from trl.rewards import accuracy_reward

    event("imports_done", trl=trl.__version__, torch=torch.__version__)

    rows = [json.loads(line) for line in open(args.data) if line.strip()]
    for r in rows:  # DeepMath-103K's raw columns -> the GRPO ones
        if "prompt" not in r and "question" in r:
            r["prompt"] = [{"role": "user", "content": r["question"]}]
        if "solution" not in r and "final_answer" in r:
            r["solution"] = r["final_answer"]
    ds = Dataset.from_list([{"prompt": r["prompt"], "solution": str(r["solution"])} for r in rows])

    def digit_share(completions, **kwargs):
        """Shaping reward: share of digit characters (varies even for a random model)."""
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]

    class StepTimes(TrainerCallback):
        # dt: step begin -> step end; gap: previous step end (or train begin) -> this step end, the measure
        # the launcher's metrics.jsonl calls step_time_s (so the two compare like for like)
        def on_train_begin(self, a, state, control, **kw):
            self.prev_end = time.time()

        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.time()

        def on_step_end(self, a, state, control, **kw):
            now = time.time()
            self.last = {"step": state.global_step, "dt": round(now - self.t0, 4),
                         "gap": round(now - self.prev_end, 4), "t_end": round(now, 3)}
            self.prev_end = now

        def on_log(self, a, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if "train_runtime" in logs:
                event("train_summary", **logs)
                return
            keep = {k: v for k, v in logs.items() if k in ("loss", "grad_norm", "reward", "reward_std", "learning_rate",
                                                            "step_time")
                    or k.startswith("rewards/") or k.startswith("completions/mean_length")}
            event("step", **getattr(self, "last", {"step": state.global_step}), **keep)

    cfg = dict(
        output_dir=args.out,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        num_generations=args.generations,
        max_completion_length=args.max_completion,
        learning_rate=args.lr,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0,
    )
    if args.cpu:
        cfg.update(use_cpu=True, bf16=False)
    else:
        cfg.update(bf16=True)
    if args.mode == "server":
        cfg.update(use_vllm=True, vllm_mode="server", vllm_server_host=args.host, vllm_server_port=args.port,
                   vllm_server_timeout=args.server_timeout, vllm_group_port=args.group_port)
    elif args.mode == "colocate":
        cfg.update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=args.gpu_mem,
                   vllm_max_model_length=512)

    trainer = GRPOTrainer(
        model=args.model,
        reward_funcs=[{"accuracy": accuracy_reward, "digits": digit_share}[r] for r in args.rewards.split(",")],
        args=GRPOConfig(**cfg),
        train_dataset=ds,
        processing_class=AutoTokenizer.from_pretrained(args.model),
        callbacks=[StepTimes()],
    )
    event("trainer_ready")
    res = trainer.train()
    mem = round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None
    event("train_done", global_step=res.global_step, training_loss=res.training_loss, max_mem_alloc_GiB=mem)
    ok = res.global_step == args.steps
except BaseException as e:  # noqa: BLE001 - the event log must say why, whatever it was
    event("error", type=type(e).__name__, message=str(e)[:2000], traceback=traceback.format_exc()[-6000:])
    traceback.print_exc()
finally:
    event("end", ok=ok, wall_s=round(time.time() - T_START, 2))
    # vLLM / NCCL threads can keep the interpreter alive after a failure: leave now
    os._exit(0 if ok else 1)
