#!/usr/bin/env python3
"""What the launcher adds to a training step: the same seeded GRPO run on CPU with and without its callback.

    .venv/bin/python benchmarks/step_overhead.py [--steps 120] [--pairs 1]

The run is the smoke job's GRPO on CPU (trainer.use_vllm=false: generation inside the trainer, today's
CPU training path; 4 prompts x 4 completions x 32 tokens per step), built by the launcher's own trainer
code (launcher.train.training: GRPOConfig, model, tokenizer, dataset, rewards), seed 42, no checkpoints.
"With the launcher" is its LauncherCallback as the job runs it: a heartbeat at every step begin and end,
a metrics.jsonl row per log (logging_steps=1), the checkpoint.request check at every step end.

A step's time is the interval between two step ends, read by one more callback that only reads the
clock (everything in between: generation, scoring, backward, optimizer, every callback). Three measures:

  alternating  one run of --steps steps in which the launcher's callback is switched on for every other
               step: on- and off-steps see the same machine load (this box is shared), so the difference
               of their medians is the launcher's cost per step, up to its effect on the next step
  inside       the time spent inside the launcher's hooks (timed around each): the direct measure
  whole runs   --pairs runs with the callback and without, alternating (medians; the machine's load
               moves them more than the launcher does); their losses must be equal (same seed, same work)

After one warm-up run; the first 3 steps of each run are left out. The goal is under 1 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP = 3  # steps left out of each run: the first ones carry one-time costs
HOOKS = ("on_train_begin", "on_step_begin", "on_step_end", "on_log", "on_save")


def make_job(folder: Path, steps: int) -> Path:
    """A job folder holding the plan `python -m launcher +experiment=smoke trainer.use_vllm=false ...` would run."""
    from hydra import compose, initialize_config_module

    from launcher.config import schema
    from launcher.config.compose import to_launch_config
    from launcher.plan.build import build_plan

    schema.register()

    overrides = ["+experiment=smoke", "cluster=local", "trainer.use_vllm=false", f"grpo.max_steps={steps}",
                 "grpo.save_steps=1000000", "grpo.logging_steps=1"]  # the smoke job's GRPO: 4 prompts x 4 x 32 tokens
    with initialize_config_module(config_module="launcher.conf", version_base="1.3"):
        cfg = to_launch_config(compose(config_name="config", overrides=overrides))
    job = folder / "job"
    job.mkdir(parents=True)
    (job / "plan.json").write_text(build_plan(cfg, python=sys.executable).to_json())
    return job


class StepClock:
    """Reads the clock at every step end (the only callback the plain variant has); keeps the losses."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.ends.append(time.perf_counter())

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    clock.losses.append(round(float(logs["loss"]), 6))

        self.ends: list[float] = []
        self.losses: list[float] = []
        self.on: list[bool] = []  # per step: was the launcher's callback on (alternating runs)
        self.callback = Callback()

    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.ends, self.ends[1:])][SKIP:]

    def split(self) -> tuple[list[float], list[float]]:
        """(steps with the launcher's callback on, steps with it off) of an alternating run."""
        pairs = list(zip(self.on[1:], [b - a for a, b in zip(self.ends, self.ends[1:])]))[SKIP:]
        return [t for on, t in pairs if on], [t for on, t in pairs if not on]


def timed_hooks(callback) -> list[float]:
    """Wraps the launcher callback's hooks; returns the list the seconds spent in them are added to."""
    spent: list[float] = []
    for name in HOOKS:
        original = getattr(callback, name)

        def hook(*args, _original=original, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - start)
        setattr(callback, name, hook)
    return spent


def gated(launcher, clock: StepClock):
    """A callback passing every event on to `launcher` during every other step (odd global steps)."""
    from transformers import TrainerCallback

    class Gate(TrainerCallback):
        on = False

        def __getattribute__(self, name):
            if name.startswith("on_") and name != "on_step_begin":
                return getattr(launcher, name) if Gate.on else (lambda *a, **k: None)
            return super().__getattribute__(name)

        def on_step_begin(self, args, state, control, **kwargs):
            Gate.on = state.global_step % 2 == 0  # the step about to run is odd
            clock.on.append(Gate.on)
            if Gate.on:
                return launcher.on_step_begin(args, state, control, **kwargs)

    return Gate()


def run(job_dir: Path, attempt: str, with_launcher: bool, alternate: bool = False) -> tuple[StepClock, float]:
    """One training run; (its clock, seconds spent inside the launcher's callback)."""
    from trl import GRPOTrainer

    from launcher.train.callback import LauncherCallback
    from launcher.train.data import load_processing_class, load_rewards, load_train_dataset
    from launcher.train.job import folders, load_job
    from launcher.train.report import HeartbeatWriter
    from launcher.train.training import build_grpo_config, load_model

    env = {"LAUNCHER_JOB_DIR": str(job_dir), "LAUNCHER_ATTEMPT_DIR": str(job_dir / attempt), "LAUNCHER_DEVICE": "cpu"}
    job = load_job(folders(env), env)
    job.attempt_dir.mkdir(parents=True, exist_ok=True)
    args = build_grpo_config(job)
    args.disable_tqdm = True
    model, tokenizer = load_model(job, args), load_processing_class(job.plan.model)
    clock = StepClock()
    callbacks = [clock.callback]
    spent: list[float] = []
    launcher = None
    if with_launcher:
        launcher = LauncherCallback(job.attempt_dir, HeartbeatWriter(job.attempt_dir, enabled=True), True)
        spent = timed_hooks(launcher)
        callbacks.insert(0, gated(launcher, clock) if alternate else launcher)  # the clock reads after it
    trainer = GRPOTrainer(model=model, reward_funcs=load_rewards(job.plan.reward), args=args,
                          train_dataset=load_train_dataset(job.plan.data), processing_class=tokenizer,
                          callbacks=callbacks)
    if launcher is not None:
        launcher.attach(trainer)
    trainer.train()
    return clock, sum(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="steps of the alternating run")
    parser.add_argument("--pairs", type=int, default=1, help="whole runs with and without (30 steps each)")
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    sys.path.insert(0, str(REPO))
    import transformers

    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="step-overhead-") as tmp:
        long_job, short_job = make_job(Path(tmp) / "long", args.steps), make_job(Path(tmp) / "short", 30)
        run(short_job, "warm-up", with_launcher=True)
        clock, spent = run(long_job, "alternating", with_launcher=True, alternate=True)
        on, off = clock.split()
        steps: dict[str, list[float]] = {"launcher": [], "plain": []}
        losses: dict[str, list[list[float]]] = {"launcher": [], "plain": []}
        for n in range(args.pairs):
            for variant in ("launcher", "plain"):
                whole, _ = run(short_job, f"attempt-{variant}-{n}", variant == "launcher")
                steps[variant] += whole.steps()
                losses[variant].append(whole.losses)
    off_ms, on_ms = statistics.median(off) * 1000, statistics.median(on) * 1000
    inside_ms = spent / len(on) * 1000  # the callback ran during the on-steps only
    print(f"\nGRPO on CPU, the smoke model, 4 prompts x 4 completions x 32 tokens per step")
    print(f"  alternating run of {args.steps} steps: {len(on)} with the launcher's callback, {len(off)} without")
    print(f"    median step with    {on_ms:8.1f} ms   (p10 {min_q(on):.1f}, p90 {max_q(on):.1f})")
    print(f"    median step without {off_ms:8.1f} ms   (p10 {min_q(off):.1f}, p90 {max_q(off):.1f})")
    print(f"    difference {on_ms - off_ms:+.2f} ms per step ({(on_ms - off_ms) / off_ms * 100:+.2f} % of the step)")
    print(f"  inside the launcher's callback: {inside_ms:.3f} ms per step ({inside_ms / off_ms * 100:.3f} % of the "
          f"step; goal < 1 %)")
    if args.pairs:
        med = {v: statistics.median(s) * 1000 for v, s in steps.items()}
        same = all(run_losses == losses["plain"][0] for runs in losses.values() for run_losses in runs)
        print(f"  whole runs ({args.pairs} of each, 30 steps): median step with {med['launcher']:.1f} ms, "
              f"without {med['plain']:.1f} ms ({med['launcher'] - med['plain']:+.1f} ms); "
              f"same losses (same seed, same work): {'yes' if same else 'NO'}")


def min_q(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[0] * 1000


def max_q(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] * 1000


if __name__ == "__main__":
    main()
