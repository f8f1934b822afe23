"""Training: build TRL's GRPOConfig and GRPOTrainer from the plan, resume from the newest complete
checkpoint, train, save. Runs on every process `accelerate launch` started (one per GPU, possibly
several nodes), or as one plain process on CPU (a world of one process).

Heartbeat phases: load_data (rewards and dataset first: they fail fast), load_model, waiting_for_server
(server mode), build_trainer, train, then per step (launcher.train.callback), save, done ({"reason":
"finished" | "checkpoint"}). A later attempt resumes from the newest complete `checkpoint-*` (one holding
trainer_state.json) in output_dir; newer incomplete ones are ignored.

The overlapped start (server mode): TRL's GRPOTrainer connects to the server in its constructor (its
VLLMGeneration makes the VLLMClient, which waits for /health, and joins the weight-sync group: NCCL on
GPUs; on CPU gloo, through launcher.sync.client, swapped in for that one name while GRPOTrainer is built), so
everything that does not need the server comes first (imports, GRPOConfig and the process group, model,
tokenizer, dataset, rewards, the GRPOTrainer class itself), then the trainer waits for the supervisor's
handover (launcher.train.handover) and only then builds GRPOTrainer with the server's URL. Besides that CPU
client no TRL internals are patched; what waits for the server is GRPOTrainer's own construction (the
reference model only when grpo.beta > 0, which is not TRL's default).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

from launcher.jobfolder.progress import TrainerPhase
from launcher.paths import local_path
from launcher.train.data import load_processing_class, load_rewards, load_train_dataset, reward_name
from launcher.train.server_token import job_token
from launcher.train.errors import EXIT_OK, JobError
from launcher.train.handover import server_url
from launcher.train.job import Job
from launcher.train.lora import lora_config_for, trainable_summary
from launcher.train.ranks import group_port
from launcher.train.report import HeartbeatWriter, say
from launcher.train.tracking import check_installed, mark_resume, tracking_callbacks

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def build_grpo_config(job: Job):
    """GRPOConfig from the plan's kwargs plus what only the job knows: CPU, the server URL, the group port."""
    kwargs = dict(job.grpo)
    if job.use_cpu:
        kwargs.update(use_cpu=True, bf16=False, fp16=False)
    if job.server_mode:
        kwargs["vllm_server_base_url"] = job.server_url  # None until the handover (run_training sets it)
        kwargs["vllm_group_port"] = group_port(job.is_main)
    kwargs.setdefault("trust_remote_code", bool(job.plan.model.trust_remote_code))
    if not sys.stderr.isatty():
        kwargs.setdefault("disable_tqdm", True)  # progress bars garble trainer.log; logs are printed instead
    from trl import GRPOConfig

    try:
        return GRPOConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise JobError(f"GRPOConfig rejected the plan's grpo settings: {e}") from None


def weight_sync(job: Job):
    """What GRPOTrainer's construction runs under: on CPU in server mode, the gloo client (launcher.sync.client)
    in place of TRL's CUDA-only one; otherwise nothing (TRL's NCCL path as it is)."""
    if job.server_mode and job.use_cpu:
        from launcher.sync.client import cpu_weight_sync

        if job.is_main:
            say("weight sync to the server over gloo (launcher.sync: TRL's NCCL path needs CUDA)")
        return cpu_weight_sync(job.plan.policies.sync_timeout_s)
    return contextlib.nullcontext()


def load_model(job: Job, args: Any):
    """The policy, as GRPOTrainer would load it by name (model_init_kwargs, revision, device_map)."""
    from trl.trainer.utils import create_model_from_path

    init = args.model_init_kwargs or {}
    if isinstance(init, str):
        init = json.loads(init)
    init = dict(init)
    if job.plan.model.revision:
        init.setdefault("revision", job.plan.model.revision)
    init.setdefault("trust_remote_code", args.trust_remote_code)
    if args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
        init["device_map"] = None  # what GRPOTrainer does for a model given by name
    model = create_model_from_path(str(local_path(job.plan.model.name_or_path)), **init)
    args.model_init_kwargs = None  # used here; GRPOTrainer would warn that they are ignored
    return model


def find_resume_checkpoint(output_dir: str) -> tuple[Optional[str], list[str]]:
    """The newest complete checkpoint-* in output_dir (it holds trainer_state.json) and the incomplete newer ones."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None, []
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                    if p.is_dir() and (m := CHECKPOINT_DIR.match(p.name))), reverse=True)
    skipped = []
    for _, path in found:
        if (path / "trainer_state.json").is_file():
            return str(path), skipped
        skipped.append(str(path))
    return None, skipped


def _resume_point(output_dir: str, is_main: bool) -> Optional[str]:
    resume, incomplete = find_resume_checkpoint(output_dir)
    if is_main:
        for path in incomplete:
            say(f"ignoring incomplete checkpoint {path} (no trainer_state.json)")
        say(f"resuming from checkpoint {resume}" if resume else f"no checkpoint in {output_dir}: starting from step 0")
    return resume


def run_training(job: Job, beat: HeartbeatWriter) -> int:
    from launcher.train.callback import LauncherCallback  # imports transformers: only when training

    started = time.time()
    check_installed(job)  # W&B / TensorBoard missing: end now, naming grpo.report_to
    args = build_grpo_config(job)
    is_main = job.is_main

    beat(TrainerPhase.LOAD_DATA)  # the cheap checks first: a reward that does not import fails before the model loads
    rewards = load_rewards(job.plan.reward, beat)  # guarded: heartbeat names the reward, reward.timeout_s
    with args.main_process_first(desc="dataset loading"):
        dataset = load_train_dataset(job.plan.data, job.plan.reward.funcs)
    if is_main:
        say(f"dataset {job.plan.data.name_or_path}: {len(dataset)} rows, columns {', '.join(dataset.column_names)}; "
            f"rewards {', '.join(reward_name(f) for f in rewards)}")

    beat(TrainerPhase.LOAD_MODEL)
    t0 = time.time()
    model = load_model(job, args)
    processing_class = load_processing_class(job.plan.model)
    if is_main:
        n_params = sum(p.numel() for p in model.parameters())
        say(f"model {job.plan.model.name_or_path}: {n_params / 1e6:.1f} M parameters, "
            f"{next(model.parameters()).dtype}, loaded in {time.time() - t0:.1f} s")
    lora = lora_config_for(model, job.plan.model.lora, job.plan.model.name_or_path, is_main)  # None: full fine-tuning

    from trl import GRPOTrainer  # imports TRL's vLLM client side too: before the wait

    if job.server_mode:
        args.vllm_server_base_url = server_url(job, beat, prepared_s=time.time() - started)
        if is_main:
            say(f"weight-sync group port {args.vllm_group_port} on "
                f"{os.environ.get('VLLM_HOST_IP') or 'the address vLLM detects (VLLM_HOST_IP unset)'}")

    beat(TrainerPhase.BUILD_TRAINER)
    callback = LauncherCallback(job.attempt_dir, beat, is_main)
    with weight_sync(job), job_token():  # the token's client subclasses whichever client weight_sync put there
        trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=dataset,
                              processing_class=processing_class, callbacks=[callback, *tracking_callbacks(job)],
                              peft_config=lora)
    callback.attach(trainer)
    if lora is not None and is_main:
        say(f"LoRA adapter: {trainable_summary(trainer.model)}")

    resume = _resume_point(args.output_dir, is_main)
    mark_resume(job, resume)  # TensorBoard goes on from the checkpoint's step, not from an earlier attempt's last
    beat(TrainerPhase.TRAIN, resume_from=resume)
    trainer.train(resume_from_checkpoint=resume)
    step = trainer.state.global_step

    if callback.checkpoint_step is not None and step < trainer.state.max_steps:
        beat(TrainerPhase.DONE, step, reason="checkpoint", checkpoint=callback.checkpoint_path)
        if is_main:
            say(f"stopped for a checkpoint at step {step}: {callback.checkpoint_path}")
        return EXIT_OK

    beat(TrainerPhase.SAVE, step, stage="final")
    trainer.save_model(args.output_dir)
    if is_main:
        trainer.save_state()
    beat(TrainerPhase.DONE, step, reason="finished")
    if is_main:
        say(f"training finished at step {step}; final model in {args.output_dir}")
    return EXIT_OK
