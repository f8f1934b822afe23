#!/usr/bin/env python3
"""Build the offline smoke-test assets: a tiny random-weight chat model and a DeepMath-schema dataset.

    python scripts/make_smoke_assets.py [--out DIR] [--force] [--dtype bfloat16|float32]

Writes (default DIR = ${LAUNCHER_CACHE:-~/.cache/launcher}/smoke):

    DIR/model/        Qwen3ForCausalLM, 2 layers, hidden 256, 4 heads / 2 KV heads, head_dim 64,
                      tied embeddings, random weights (seed 0), safetensors; a byte-level BPE
                      tokenizer trained here on generated text (vocab = tokenizer size), ChatML chat
                      template, eos = <|im_end|>, pad = <|pad|>
    DIR/data/train.jsonl   64 rows  {"prompt": [{"role": "user", "content": "What is 94 * 49? Put
    DIR/data/test.jsonl    16 rows    the final answer within \\boxed{}."}], "solution": "4606"}
    DIR/smoke.json    version stamp + sha256 of every file

No network. Deterministic: a rebuild gives the same bytes (for the same torch / transformers /
tokenizers versions). Idempotent: if smoke.json carries the same version and parameters and every
file still matches its sha256, nothing is rebuilt. The build goes to a temporary sibling folder that
replaces DIR at the end, so an interrupted build never leaves a half-written DIR.

Heavy imports (torch, transformers, tokenizers) happen only inside build(): the module itself can be
imported anywhere (e.g. by tests that only need default_out()).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Bump when the produced files change in content or layout.
ASSETS_VERSION = 1
SEED = 0
N_TRAIN = 64
N_TEST = 16
STAMP = "smoke.json"

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"

# ChatML, as used by Qwen chat models (system/user/assistant turns, optional generation prompt).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

MODEL_CONFIG = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    max_position_embeddings=2048,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)
TOKENIZER_VOCAB = 2048

FILLER_WORDS = (
    "the a an is are was what how many much sum product difference of and plus minus times "
    "answer question solve compute find value number total result equals step think first then "
    "so therefore we have let x y z each more less than twice half final boxed please reason put "
    "your within user assistant system you are a helpful math tutor"
).split()


def default_out() -> Path:
    cache = os.environ.get("LAUNCHER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "launcher")
    return Path(cache) / "smoke"


def make_problem(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    op = rng.choice(["+", "-", "*"])
    answer = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"What is {a} {op} {b}? Put the final answer within \\boxed{{}}.", str(answer)


def make_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        question, answer = make_problem(rng)
        rows.append({"prompt": [{"role": "user", "content": question}], "solution": answer})
    return rows


def make_corpus(rng: random.Random, n: int = 4000) -> list[str]:
    """Text for training the tokenizer: math questions, boxed answers, ChatML-ish filler."""
    lines = []
    for _ in range(n):
        question, answer = make_problem(rng)
        lines.append(question)
        lines.append(f"We compute the value step by step. The answer is \\boxed{{{answer}}}.")
        lines.append(" ".join(rng.choice(FILLER_WORDS) for _ in range(rng.randint(5, 20))))
    return lines


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != STAMP
    }


def params(dtype: str) -> dict:
    return {
        "version": ASSETS_VERSION,
        "seed": SEED,
        "dtype": dtype,
        "n_train": N_TRAIN,
        "n_test": N_TEST,
        "model": MODEL_CONFIG,
        "tokenizer_vocab": TOKENIZER_VOCAB,
    }


def is_built(out: Path, dtype: str) -> bool:
    try:
        stamp = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("params") != params(dtype):
        return False
    return stamp.get("files") == hash_tree(out)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build(out: Path, dtype: str) -> dict:
    """Build everything into `out` (which must not exist). Returns facts for the stamp."""
    # Single-threaded tokenizer training: no thread-count dependence.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model_dir, data_dir = out / "model", out / "data"
    model_dir.mkdir(parents=True)
    data_dir.mkdir()

    # -- tokenizer: byte-level BPE, so any text round-trips
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(make_corpus(random.Random(SEED)), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        model_max_length=MODEL_CONFIG["max_position_embeddings"],
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(model_dir)

    # -- model: random weights from a fixed seed
    vocab = len(hf_tok)
    eos_id = hf_tok.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = hf_tok.convert_tokens_to_ids(PAD_TOKEN)
    torch_dtype = getattr(torch, dtype)
    config = Qwen3Config(
        vocab_size=vocab,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype=dtype,
        **MODEL_CONFIG,
    )
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(config).to(torch_dtype).eval()
    model.generation_config.bos_token_id = None
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.save_pretrained(model_dir, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())

    # -- data (DeepMath schema as used by TRL: conversational prompt + solution)
    rng = random.Random(SEED + 1)
    write_jsonl(data_dir / "train.jsonl", make_rows(rng, N_TRAIN))
    write_jsonl(data_dir / "test.jsonl", make_rows(rng, N_TEST))

    # -- sanity: the chat template renders and round-trips through the tokenizer
    example = json.loads((data_dir / "train.jsonl").read_text().splitlines()[0])
    text = hf_tok.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
    ids = hf_tok(text)["input_ids"]
    assert hf_tok.decode(ids) == text, "tokenizer does not round-trip the chat template"
    assert max(ids) < vocab
    return {
        "n_params": n_params,
        "vocab_size": vocab,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "example_prompt": text,
        "example_prompt_tokens": len(ids),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=default_out(), help="output folder (default: %(default)s)")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                    help="weight dtype of the checkpoint (default: %(default)s)")
    ap.add_argument("--force", action="store_true", help="rebuild even if already built")
    args = ap.parse_args(argv)
    out: Path = args.out.expanduser().resolve()
    t0 = time.perf_counter()

    if not args.force and is_built(out, args.dtype):
        stamp = json.loads((out / STAMP).read_text())
        print(f"smoke assets up to date (version {ASSETS_VERSION}): {out}")
        for name, digest in stamp["files"].items():
            print(f"  {digest}  {name}")
        return 0

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.rmtree(tmp)
        facts = build(tmp, args.dtype)
        for p in tmp.rglob("*"):  # mkdtemp / safetensors write owner-only modes
            p.chmod(0o755 if p.is_dir() else 0o644)
        tmp.chmod(0o755)
        files = hash_tree(tmp)
        stamp = {"params": params(args.dtype), "facts": facts, "files": files}
        (tmp / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"built smoke assets (version {ASSETS_VERSION}) in {time.perf_counter() - t0:.1f} s: {out}")
    print(f"  model: {facts['n_params']} params, vocab {facts['vocab_size']}, "
          f"eos {facts['eos_token_id']}, pad {facts['pad_token_id']}, dtype {args.dtype}")
    print(f"  data:  {N_TRAIN} train rows, {N_TEST} test rows")
    for name, digest in files.items():
        print(f"  {digest}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
