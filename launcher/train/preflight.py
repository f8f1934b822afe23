"""The preflight: no training. Checks the vLLM server (/health, then TRL's client), generates
`plan.policies.preflight_prompts` dataset prompts x num_generations through TRL's VLLMClient as
GRPOTrainer would (token ids, the plan's sampling settings), scores them with the reward functions,
prints a summary and records it: `preflight.json` and one metrics.jsonl row of kind "preflight".

The trainer step decides when it runs (trainer.preflight=true, or server mode on a node without CUDA:
weight sync to the server needs CUDA) and passes `--preflight[=WHY]`. Global rank 0 only.
The overlapped start as in training: tokenizer, dataset, rewards and the prompts' token ids are prepared
first, then the server's address is waited for (launcher.train.handover). Heartbeat phase "preflight"
with stage data, then waiting_for_server, then "preflight" with stage server, generate, score; then done
(reason "preflight").
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any, Optional

from launcher.health import wait_healthy
from launcher.jobfolder import progress
from launcher.jobfolder.names import PREFLIGHT
from launcher.jobfolder.progress import TrainerPhase
from launcher.train.data import load_processing_class, load_rewards, load_train_dataset
from launcher.train.errors import EXIT_OK, JobError, PreflightFailed
from launcher.train.handover import server_url
from launcher.train.job import Job
from launcher.train.report import HeartbeatWriter, say
from launcher.train.scoring import Scores, score

DEFAULT_SERVER_TIMEOUT_S = 240.0  # GRPOConfig.vllm_server_timeout when the plan leaves it unset


def grpo_settings(grpo: dict) -> dict:
    """GRPOConfig's field defaults overlaid with the plan's values, without building a GRPOConfig
    (its batch checks count this process's world size, which is not the training job's)."""
    from trl import GRPOConfig

    settings: dict[str, Any] = {}
    for f in dataclasses.fields(GRPOConfig):
        if f.default is not dataclasses.MISSING:
            settings[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            settings[f.name] = f.default_factory()  # type: ignore[misc]
    settings.update(grpo)
    for key in ("generation_kwargs", "chat_template_kwargs"):
        if isinstance(settings.get(key), str):
            settings[key] = json.loads(settings[key])
    return settings


@dataclass
class Server:
    url: str
    client: Any  # trl VLLMClient
    world_size: int
    waited_s: float
    info: dict
    notes: list[str]


def check_server(url: str, settings: dict) -> Server:
    """/health within vllm_server_timeout, then TRL's client: world size and /server_info (weight sync)."""
    try:
        waited = wait_healthy(url, float(settings.get("vllm_server_timeout") or DEFAULT_SERVER_TIMEOUT_S),
                              every_s=2.0)
    except TimeoutError as e:
        raise PreflightFailed(str(e)) from None
    from trl.generation.vllm_client import VLLMClient

    from launcher.train.server_token import token_client

    try:
        client = token_client(VLLMClient)(base_url=url, connection_timeout=0.0)
        world = client.get_world_size()
    except Exception as e:  # noqa: BLE001
        raise PreflightFailed(f"the vLLM server at {url} answers /health but not TRL's client: {e}") from e
    notes: list[str] = []
    info: dict[str, Any] = {}
    try:
        raw = client.get_server_info()
        info = {"weight_transfer_config": raw.get("weight_transfer_config"),
                "logprobs_mode": (raw.get("model_config") or {}).get("logprobs_mode")}
        if raw.get("weight_transfer_config") is None:
            notes.append("the server has no weight-transfer engine: training would fail at init_communicator")
        if info["logprobs_mode"] not in (None, "processed_logprobs") and settings.get(
                "vllm_importance_sampling_correction", True):
            notes.append(f"server logprobs_mode is {info['logprobs_mode']}; TRL wants processed_logprobs")
    except Exception as e:  # noqa: BLE001
        notes.append(f"/server_info unavailable ({e}); training needs it for weight sync")
    say(f"server {url} healthy after {waited:.1f} s: model {client.model}, {world} worker(s)")
    return Server(url=url, client=client, world_size=world, waited_s=waited, info=info, notes=notes)


def tokenize_prompts(processing_class: Any, prompts: list, chat_template_kwargs: dict) -> list[list[int]]:
    """What GRPOTrainer sends the server: the chat template applied to conversational prompts, as token ids."""
    from trl.data_utils import is_conversational

    if is_conversational({"prompt": prompts[0]}):
        tokenized = processing_class.apply_chat_template(
            conversation=prompts, add_generation_prompt=True, tokenize=True, return_dict=True, **chat_template_kwargs)
        return [list(ids) for ids in tokenized["input_ids"]]
    return [list(ids) for ids in processing_class(text=prompts)["input_ids"]]


def generate(server: Server, prompt_ids: list[list[int]], n: int, settings: dict) -> tuple[list, float]:
    """(completion ids, seconds) for every prompt x n, with the plan's sampling settings."""
    start = time.time()
    try:
        out = server.client.generate(
            prompts=prompt_ids, n=n, repetition_penalty=settings["repetition_penalty"],
            temperature=settings["temperature"], top_p=settings["top_p"], top_k=settings["top_k"],
            min_p=0.0 if settings.get("min_p") is None else settings["min_p"],
            max_tokens=settings["max_completion_length"], logprobs=0,
            structured_outputs_regex=settings.get("vllm_structured_outputs_regex"),
            generation_kwargs=settings.get("generation_kwargs"))
    except Exception as e:  # noqa: BLE001
        raise PreflightFailed(f"generation through {server.url} failed: {e}") from e
    completion_ids = out["completion_ids"]
    if len(completion_ids) != len(prompt_ids) * n:
        raise PreflightFailed(f"the server returned {len(completion_ids)} completions for "
                              f"{len(prompt_ids)} prompts x {n}")
    return completion_ids, time.time() - start


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def record(job: Job, summary: dict) -> None:
    """preflight.json and the metrics row, then the summary on stdout."""
    progress.write_json_atomic(job.attempt_dir / PREFLIGHT, summary)
    progress.append_metrics(job.attempt_dir, {
        "kind": "preflight", "step": 0, "reward": summary["reward"], "reward_std": summary["reward_std"],
        "tokens_per_s": summary["tokens_per_s"], "completion_mean_length": summary["completion_mean_length"],
        "completion_tokens": summary["completion_tokens"], "completions": summary["completions"],
        "generation_s": summary["generation_s"], "elapsed_s": summary["elapsed_s"]})
    say(f"preflight: {summary['prompts']} prompts x {summary['num_generations']} completions, reward mean "
        f"{_fmt(summary['reward'])} std {_fmt(summary['reward_std'])} ({summary['skipped']} skipped: no reward), "
        f"{summary['completion_tokens']} completion tokens ({summary['completion_mean_length']:.1f} per "
        f"completion), {_fmt(summary['tokens_per_s'])} tokens/s over {summary['generation_s']:.2f} s of "
        f"generation, elapsed {summary['elapsed_s']:.1f} s")
    for name, r in summary["rewards"].items():
        say(f"  reward {name}: mean {_fmt(r['mean'])} std {_fmt(r['std'])}, {r['scored']} scored, "
            f"{r['skipped']} skipped")
    say(f"  sample completion: {summary['sample']['completion'][:200]!r}")
    for note in summary["notes"]:
        say(f"  note: {note}")
    say(f"preflight passed; summary in {job.attempt_dir / PREFLIGHT}")


def summarize(reason: str, server: Server, settings: dict, prompts: list, n_gen: int, texts: list[str],
              completion_ids: list, scores: Scores, gen_s: float, elapsed: float) -> dict:
    completion_tokens = sum(len(ids) for ids in completion_ids)
    reward, reward_std = scores.reward
    return {
        "ok": True, "reason": reason, "server_url": server.url, "served_model": server.client.model,
        "server_world_size": server.world_size, "server": server.info, "prompts": len(prompts),
        "num_generations": n_gen, "completions": scores.completions,
        "scored": len(scores.totals), "skipped": scores.skipped, "reward": reward, "reward_std": reward_std,
        "rewards": scores.per_func, "completion_tokens": completion_tokens,
        "completion_mean_length": completion_tokens / scores.completions,
        "max_completion_length": settings["max_completion_length"], "generation_s": gen_s,
        "tokens_per_s": completion_tokens / gen_s if gen_s > 0 else None, "health_wait_s": server.waited_s,
        "elapsed_s": elapsed, "sample": {"prompt": prompts[0], "completion": texts[0][:500]},
        "notes": server.notes,
    }


def run_preflight(job: Job, beat: HeartbeatWriter, reason: str) -> int:
    start = time.time()
    beat(TrainerPhase.PREFLIGHT, stage="data")
    settings = grpo_settings(job.grpo)
    n_gen = int(settings["num_generations"])
    rewards = load_rewards(job.plan.reward, beat, TrainerPhase.PREFLIGHT)  # the cheapest check first
    dataset = load_train_dataset(job.plan.data, job.plan.reward.funcs)
    rows = dataset.select(range(min(int(job.plan.policies.preflight_prompts or 4), len(dataset))))
    if len(rows) == 0:
        raise JobError(f"the dataset {job.plan.data.name_or_path} is empty")
    processing_class = load_processing_class(job.plan.model)
    prompts = list(rows["prompt"])
    prompt_ids = tokenize_prompts(processing_class, prompts, settings.get("chat_template_kwargs") or {})
    import trl.generation.vllm_client  # noqa: F401 - TRL's client, imported before the wait

    url = server_url(job, beat, prepared_s=time.time() - start)
    beat(TrainerPhase.PREFLIGHT, stage="server")
    server = check_server(url, settings)

    beat(TrainerPhase.PREFLIGHT, stage="generate")
    completion_ids, gen_s = generate(server, prompt_ids, n_gen, settings)
    texts = processing_class.batch_decode(completion_ids, skip_special_tokens=True)

    beat(TrainerPhase.PREFLIGHT, stage="score")
    from trl.data_utils import is_conversational

    conversational = is_conversational({"prompt": prompts[0]})
    completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else list(texts)
    columns = {k: [row[k] for row in rows for _ in range(n_gen)]
               for k in rows.column_names if k not in ("prompt", "completion", "completion_ids")}
    scores = score(rewards, job.plan.reward.weights, [p for p in prompts for _ in range(n_gen)], completions,
                   completion_ids, columns)

    record(job, summarize(reason, server, settings, prompts, n_gen, texts, completion_ids, scores, gen_s,
                          time.time() - start))
    beat(TrainerPhase.DONE, reason="preflight")
    return EXIT_OK
