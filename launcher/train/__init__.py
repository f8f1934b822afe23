"""The trainer (python -m launcher.train), run inside the job by launcher.components.trainer_step; with the
server, the only code that imports torch/TRL. The flow, module by module:

  entry.py     arguments, what runs (first log line), versions.json, exit codes
  job.py       the Job: plan.json from LAUNCHER_JOB_DIR, the attempt folder, LAUNCHER_DEVICE, the server URL
  training.py  GRPOConfig + GRPOTrainer, resume from the newest complete checkpoint, train, save
  callback.py  the TrainerCallback: heartbeats, metrics rows, weight-sync timing, checkpoint on request
  preflight.py no training: check the server, generate through it, score, record preflight.json
  data.py      dataset, tokenizer and reward functions from the plan's DataSpec/ModelSpec/RewardSpec
  scoring.py   rewards on completions as GRPOTrainer computes them (for the preflight)
  metrics.py   metrics.jsonl rows and the tokens/s estimate
  report.py    log lines and the heartbeat writer;  ranks.py  rank, world size, group port
  versions.py  versions.json;  errors.py  exit codes and the failures behind them
"""
