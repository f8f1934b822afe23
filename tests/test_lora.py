"""LoRA (model.lora): the keys checked before queueing (and the login node still imports nothing heavy, peft
included), the plan naming it, the in-job check of target modules against the loaded model, checkpoints
that hold the adapter and a resume that loads it back (trainer only, trainer.use_vllm=false), and, through
the real vLLM CPU server, the merged weights reaching the server (vllm_cpu: one server start).

The smoke model is Qwen3 (scripts/make_smoke_assets.py): peft's default targets for it are q_proj, v_proj.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, compose
from launcher.jobfolder import progress
from launcher.plan.build import build_plan
from launcher.plan.plan import Plan
from launcher.validate.rules import validate
from train_fixtures import CPU_TRAINING, explain, need_training_stack, run_train, run_trainer_step, write_job

SMOKE = ("+experiment=smoke", "cluster=local")
ADAPTER = ("adapter_model.safetensors", "adapter_config.json")


def errors(*overrides: str) -> list[str]:
    return [str(p) for p in validate(compose(*SMOKE, *overrides)) if p.severity == "error"]


# ----------------------------------------------------------------------------- before queueing (light)


@pytest.mark.parametrize("override, message", [
    ("model.lora.rank=0", "model.lora.rank: must be a whole number > 0 (the LoRA rank), not 0"),
    ("model.lora.alpha=0", "model.lora.alpha: must be > 0 (null = 2 x rank), not 0"),
    ("model.lora.dropout=1", "model.lora.dropout: must be >= 0 and < 1, not 1.0"),
    ("model.lora.dropout=-0.1", "model.lora.dropout: must be >= 0 and < 1, not -0.1"),
    ("model.lora.target_modules=attn", "model.lora.target_modules: must be a list of module names ([q_proj, v_proj]) "
                                       "or all-linear, not the string 'attn'"),
    ("model.lora.target_modules=[]", "model.lora.target_modules: must be a list of module names"),
    ("model.lora.target_modules=[q_proj,all-linear]", "all-linear stands alone, not in a list"),
    ("model.lora.modules_to_save=[]", "model.lora.modules_to_save: must be a list of module names, not []"),
    # the smoke model is a local folder: its safetensors header names its modules, read without torch
    ("model.lora.target_modules=[q_proj,attn_q]", "model.lora.target_modules: attn_q: no such module in "),
])
def test_bad_lora_values_are_refused_naming_the_key(override, message, smoke_assets_local):
    found = errors("model.lora.rank=8", override)
    assert any(message in e for e in found), found


def test_lora_keys_without_a_rank_are_refused_and_good_ones_pass(smoke_assets_local):
    found = errors("model.lora.alpha=16", "model.lora.target_modules=[q_proj]")
    assert found == ["model.lora.alpha, model.lora.target_modules: is set but model.lora.rank is not: LoRA is on "
                     "only with a rank (model.lora.rank=16)"], found
    assert errors() == []  # the counter-case: no LoRA, no problem
    assert errors("model.lora.rank=8") == []
    assert errors("model.lora.rank=8", "model.lora.target_modules=all-linear", "model.lora.dropout=0") == []
    assert errors("model.lora.rank=8", "model.lora.target_modules=[q_proj,mlp.down_proj]",  # peft's suffix match
                  "model.lora.modules_to_save=[lm_head]") == []


def test_an_unreadable_model_leaves_the_target_check_to_the_job(tmp_path):
    from launcher.validate.lora import unknown_targets, weight_module_names

    assert weight_module_names(tmp_path) is None  # no safetensors here: the trainer checks after loading
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "lm_head"]
    assert unknown_targets(names, ["q_proj", "mlp.down_proj", "lm_head", "proj", "v_proj"]) == ["proj", "v_proj"]


def test_the_plan_says_lora_is_on_and_with_what(smoke_assets_local):
    plan = build_plan(compose(*SMOKE, "model.lora.rank=8", "model.lora.target_modules=[q_proj,o_proj]"),
                      python=PYTHON)
    text = str(plan)
    assert "  lora:    on: rank 8, alpha 16, dropout 0.05, target modules q_proj, o_proj\n" in text
    assert "the server gets the merged weights at every sync; checkpoints and the output hold the adapter" in text
    again = Plan.from_json(plan.to_json())  # what the job reads back
    assert again.model.lora == plan.model.lora and again.model.lora.target_modules == ["q_proj", "o_proj"]
    default = build_plan(compose(*SMOKE, "model.lora.rank=4", "model.lora.alpha=3"), python=PYTHON)
    assert "rank 4, alpha 3, dropout 0.05, target modules peft's default for the architecture" in str(default)
    plain = build_plan(compose(*SMOKE), python=PYTHON)
    assert plain.model.lora is None and "lora:" not in str(plain)
    assert Plan.from_json(plain.to_json()).model.lora is None


PROBE = """
import atexit, json, runpy, sys
sys.argv = ["launcher", "+experiment=smoke", "cluster=local", "dry_run=true", "model.lora.rank=8",
            "model.lora.target_modules=[q_proj,v_proj]"]
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
runpy.run_module("launcher", run_name="__main__")
"""


def test_a_lora_dry_run_imports_nothing_heavy(smoke_assets_local):
    out = subprocess.run([PYTHON, "-c", PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "lora:    on: rank 8" in out.stdout  # the dry-run ran with LoRA, its target check included
    modules = json.loads(next(l for l in out.stderr.splitlines() if l.startswith("MODULES "))[len("MODULES "):])
    heavy = ("torch", "peft", "trl", "transformers", "safetensors", "vllm")
    assert sorted(m for m in modules if m.split(".")[0] in heavy) == []


# ----------------------------------------------------------------------------- in the job (the real peft)


def lora_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_in_the_job_a_missing_target_module_ends_the_trainer_before_any_wait(tmp_path, smoke_assets_local):
    """A model whose weights the login node cannot read (here: only config.json at submission, the weights
    arrive later, as a hub model's do): the trainer checks model.lora.target_modules once it has loaded the
    model, and ends with exit 2 naming the key, before waiting for the server (server mode, none started)."""
    need_training_stack()
    pytest.importorskip("peft")
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(smoke_assets_local / "model" / "config.json", model)
    job = tmp_path / "job"
    write_job(job, f"model.name_or_path={model}", "model.lora.rank=4", "model.lora.target_modules=[q_proj,attn_q]")
    for f in (smoke_assets_local / "model").iterdir():
        shutil.copy(f, model)
    proc, attempt = run_trainer_step(job, "attempt-1", timeout=300)
    assert proc.returncode == 2, explain(proc)
    assert f"model.lora.target_modules: attn_q: no such module in {model} (its layers are named " in proc.stderr
    assert "q_proj" in proc.stderr.rsplit("its layers are named", 1)[1]
    assert "waiting for the server" not in proc.stdout
    assert progress.read_heartbeat(attempt).phase == "failed"


# a script that knows nothing of LoRA: the launcher gives its GRPOTrainer model.lora as peft_config; its
# callback saves the adapter as train() begins (after a resume: the adapter the checkpoint gave back)
SCRIPT = """import os
from datasets import load_dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from launcher.train.smoke_reward import letter_share


class AdapterAtStart(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.save_pretrained(os.path.join(os.environ["LAUNCHER_ATTEMPT_DIR"], "adapter-at-start"))


dataset = load_dataset("json", data_files="{data}", split="train")
trainer = GRPOTrainer(model="{model}", reward_funcs=letter_share, args=GRPOConfig(), train_dataset=dataset,
                      callbacks=[AdapterAtStart()])
trainer.train()
"""


def test_lora_checkpoints_hold_the_adapter_and_resume_loads_it(tmp_path, monkeypatch, smoke_assets_local):
    """Trainer only (no server), through a user script (model.lora reaches its GRPOTrainer): a checkpoint
    requested at step 1 holds the adapter, not the model; the next attempt resumes from it and starts training
    with exactly the checkpoint's adapter, tensor for tensor. The counter-case is attempt 1's own start: a fresh
    adapter, its lora_B all zero (peft's init), where checkpoint-1's are not: an attempt that did not load the
    checkpoint would start like attempt 1."""
    need_training_stack()
    pytest.importorskip("peft")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(SCRIPT.format(data=smoke_assets_local / "data" / "train.jsonl",
                                                     model=smoke_assets_local / "model"))
    job = tmp_path / "job"
    write_job(job, *CPU_TRAINING, "trainer.script=train.py", "model.lora.rank=4",
              "model.lora.target_modules=[q_proj,v_proj]", "grpo.learning_rate=0.01", "grpo.max_steps=3",
              "grpo.save_steps=100")
    (job / "code").mkdir()
    shutil.copy(tmp_path / "train.py", job / "code" / "train.py")  # what write_snapshot freezes at submission
    progress.request_checkpoint(job / "attempt-1", "test")
    proc, attempt = run_trainer_step(job, "attempt-1")
    assert proc.returncode == 0, explain(proc)
    assert "LoRA: rank 4, alpha 8, dropout 0.05 from model.lora" in proc.stdout
    assert "stopped for a checkpoint at step 1" in proc.stdout
    checkpoint = job / "output" / "checkpoint-1"
    assert {p.name for p in checkpoint.iterdir()} >= {*ADAPTER, "trainer_state.json", "optimizer.pt"}
    assert not (checkpoint / "model.safetensors").exists()  # the adapter, not the full weights
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    saved = lora_tensors(checkpoint)
    assert len(saved) == 8 and all(".q_proj." in n or ".v_proj." in n for n in saved)  # 2 layers x (q, v) x (A, B)
    fresh = lora_tensors(attempt / "adapter-at-start")
    assert sorted(fresh) == sorted(saved)
    assert all(not t.any() for n, t in fresh.items() if "lora_B" in n)  # peft's init: B = 0
    assert all(t.abs().max() > 0 for n, t in saved.items() if "lora_B" in n)  # one step of training moved B

    proc, attempt = run_trainer_step(job, "attempt-2")
    assert proc.returncode == 0, explain(proc)
    assert f"resuming from checkpoint {checkpoint}" in proc.stdout
    assert [r["step"] for r in progress.read_metrics(attempt) if r.get("kind") == "train"] == [2, 3]
    resumed = lora_tensors(attempt / "adapter-at-start")
    assert sorted(resumed) == sorted(saved)
    different = [n for n in saved if not bool((resumed[n] == saved[n]).all())]
    assert different == [], different
    assert progress.read_heartbeat(attempt).get("reason") == "finished"
    last = job / "output" / "checkpoint-3"
    assert (last / "adapter_model.safetensors").is_file() and not (last / "model.safetensors").exists()


def test_a_scripts_own_peft_config_wins_and_a_loaded_model_is_checked(smoke_assets_local):
    """fill_script_peft_config, in process with the real peft and the smoke model: the script's own
    peft_config is kept; None (what TRL's scripts pass without --use_peft) takes model.lora; a loaded model's
    target modules are checked (JobError naming the key), a model given by name is left to peft."""
    need_training_stack()
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from launcher.plan.plan import LoraSpec
    from launcher.train.errors import JobError
    from launcher.train.lora import fill_script_peft_config

    lora = LoraSpec(rank=4, alpha=8.0, dropout=0.0, target_modules=None)
    own = peft.LoraConfig(r=2)
    arguments = {"model": "name", "peft_config": own}
    fill_script_peft_config(arguments, lora, "m", is_main=False)
    assert arguments["peft_config"] is own
    arguments = {"model": "name", "peft_config": None}
    fill_script_peft_config(arguments, lora, "m", is_main=False)
    assert arguments["peft_config"].r == 4 and arguments["peft_config"].target_modules is None  # peft picks
    model = AutoModelForCausalLM.from_pretrained(smoke_assets_local / "model")
    arguments = {"model": model}
    fill_script_peft_config(arguments, lora, "m", is_main=False)  # peft's default for qwen3, spelled out
    assert sorted(arguments["peft_config"].target_modules) == ["q_proj", "v_proj"]
    arguments = {"model": model}
    fill_script_peft_config(arguments, None, "m", is_main=False)  # no model.lora: nothing added
    assert "peft_config" not in arguments
    with pytest.raises(JobError, match=r"model.lora.target_modules: qkv: no such module in m"):
        fill_script_peft_config({"model": model}, LoraSpec(4, 8.0, 0.0, ["q_proj", "qkv"]), "m", is_main=False)
    wrapped = {"model": peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))}
    fill_script_peft_config(wrapped, lora, "m", is_main=False)  # already a PeftModel: TRL would refuse a second
    assert "peft_config" not in wrapped


def test_the_cpu_sync_runs_trls_iterator_to_its_end(tmp_path):
    """TRL's iterator of weights merges a LoRA adapter before its first tensor and unmerges after its last; the
    CPU client (launcher.sync.client) must run it to its end, as TRL's NCCL producer does, or the adapter stays
    merged and trains no more (seen: grad_norm 0 at every step). Against the stub server of test_sync_cpu."""
    pytest.importorskip("vllm")
    import torch

    from launcher.node import free_port
    from launcher.sync.client import CpuVLLMClient
    from test_sync_cpu import Stub

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    events = []

    def merged_weights():  # TRL's shape: merge, yield every tensor, unmerge
        events.append("merge")
        yield from ((n, p.data) for n, p in model.named_parameters())
        events.append("unmerge")

    def too_many():
        yield from merged_weights()
        yield "extra", torch.zeros(1)

    meta = [(n, str(p.dtype).removeprefix("torch."), list(p.shape)) for n, p in model.named_parameters()]
    stub = Stub(tmp_path, tp=1, dp=1)
    try:
        client = CpuVLLMClient(base_url=stub.url, group_port=free_port("127.0.0.1"), connection_timeout=30)
        client.init_communicator(device="cpu")
        client.update_named_params(meta, merged_weights())
        assert events == ["merge", "unmerge"]
        with pytest.raises(RuntimeError, match="got extra after the 4 tensors the metadata announced"):
            client.update_named_params(meta, too_many())
        client.close_communicator()
    finally:
        stub.close()


# ----------------------------------------------------------------------------- through the real vLLM CPU server


def completion_logp_gap(base_dir: Path, adapter_dir: Path, prompts: list) -> float:
    """Mean |logp(base + adapter) - logp(base)| over tokens sampled from base + adapter: TRL's
    sampling_logp_difference for a server that still held the base weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).merge_and_unload()
    torch.manual_seed(0)
    gaps = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)["input_ids"]
            full = merged.generate(ids, do_sample=True, max_new_tokens=16, min_new_tokens=16,
                                   pad_token_id=tokenizer.eos_token_id)
            new = full[:, ids.shape[1]:]
            logps = [torch.log_softmax(m(full).logits[:, ids.shape[1] - 1:-1], -1).gather(-1, new[..., None])
                     for m in (merged, base)]
            gaps.append((logps[0] - logps[1]).abs().mean().item())
    return sum(gaps) / len(gaps)


@pytest.mark.vllm_cpu
def test_lora_trains_through_the_server_which_gets_the_merged_weights(tmp_path, smoke_assets_local):
    """`+experiment=smoke cluster=local model.lora.rank=8` through the real vLLM CPU server: the server's
    generations follow the trainer (TRL's logp difference stays within the synced smoke run's bound) while the
    adapter moves the model (merged weights differ from the base; checkpoints and the output hold the
    adapter). The counter-check, in process on the trained adapter: a server left with the base weights (what
    an unmerged or skipped sync leaves) would sample with a logp gap far past that bound."""
    from test_local_backend import logp_difference, start, train_rows

    # dropout 0: TRL computes the trainer's logps in train mode, so LoRA dropout alone would add to the difference
    # (measured with 0.05: up to 0.035 while synced); lr 0.02 so the adapter (B starts at 0) moves within 8 steps
    proc = start(tmp_path, "model.lora.rank=8", "model.lora.target_modules=all-linear", "model.lora.dropout=0",
                 "grpo.learning_rate=0.02", "grpo.max_steps=8", "grpo.save_steps=4")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    job_dir = Path(re.search(r"job folder (\S+)", output).group(1))
    attempt = job_dir / "attempt-1"
    assert "lora:    on: rank 8, alpha 16, dropout 0, target modules all-linear" in (job_dir / "plan.txt").read_text()
    trainer_log = (attempt / "trainer.log").read_text()
    assert "LoRA: rank 8, alpha 16, dropout 0, target modules all-linear" in trainer_log
    rows = train_rows(attempt)
    assert [r["step"] for r in rows] == list(range(1, 9)) and all(r["weight_sync_s"] > 0 for r in rows)
    # the adapter trains at every step: a sync that left it merged (no unmerge after sending) zeroes the LoRA
    # gradients (peft skips a merged adapter's branch); seen with the CPU client before it ran TRL's iterator out
    assert all(r["grad_norm"] > 0 for r in rows), [r["grad_norm"] for r in rows]
    difference = logp_difference(rows)
    assert max(difference) < 0.02, difference  # the server samples from base + adapter

    out = job_dir / "output"
    for folder in (out / "checkpoint-4", out / "checkpoint-8", out):
        assert all((folder / name).is_file() for name in ADAPTER) and not (folder / "model.safetensors").exists()
    adapter = lora_tensors(out)
    assert all(t.abs().max() > 0 for n, t in adapter.items() if "lora_B" in n)
    gap = completion_logp_gap(smoke_assets_local / "model", out,
                              [json.loads(line)["prompt"] for line in
                               (smoke_assets_local / "data" / "train.jsonl").read_text().splitlines()[:8]])
    assert gap > 0.05, gap  # the base alone would have failed the bound above (measured: 0.78-0.80)
    print(f"\nMEASURED LoRA through the server: logp difference max {max(difference):.4f} (synced); base vs "
          f"base + adapter on sampled tokens {gap:.4f}; rewards {rows[0]['reward']:.3f} -> {rows[-1]['reward']:.3f}")
