# shellcheck shell=bash
# Environment for the offline GPU test machine. Source it there (every scripts/gpu/* on that machine does):
#     source scripts/gpu/env.sh
# Where things live on that machine (all lost when the machine goes back, ~30 s after a call returns):
#     $WH    /root/wh     the transferred pieces (t1 t2 t3, moved there by scripts/gpu/stash)
#     $SITE  /root/site   vLLM, TRL and the other transferred wheels (pip --target; on PYTHONPATH)
#     $SMOKE /root/.cache/launcher/smoke   tiny model + dataset (model/, data/train.jsonl) from
#                         scripts/make_smoke_assets.py: where conf/model/tiny.yaml and conf/data/smoke.yaml
#                         look ($LAUNCHER_CACHE/smoke), so the launcher's smoke configs need no path overrides
#     $SCRATCH            pid files, raw logs; $LOGDIR: logs worth keeping (scripts/gpu/prove packs them into $OUT)
# Overridable: set any of these before sourcing.

GPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export REPO=${REPO:-$(cd "$GPU_DIR/../.." && pwd)}
export SITE=${SITE:-/root/site} WH=${WH:-/root/wh}
export LAUNCHER_CACHE=${LAUNCHER_CACHE:-/root/.cache/launcher}
export SMOKE=${SMOKE:-$LAUNCHER_CACHE/smoke}
export SCRATCH=${SCRATCH:-$WH/scratch}
export LOGDIR=${LOGDIR:-$SCRATCH/logs}

# The image's python3 (/opt/torch/.venv, Python 3.12, torch 2.11.0+cu130) + the transferred packages in $SITE.
# The working tree goes first, so `import launcher` (and `python -m launcher` from any folder, and the
# processes the launcher starts) use the carried copy of the project without installing it.
case ":${PYTHONPATH:-}:" in *":$SITE:"*) ;; *) export PYTHONPATH=$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH} ;; esac
case ":$PATH:" in *":$SITE/bin:"*) ;; *) export PATH=$SITE/bin:$PATH ;; esac   # trl, vllm console scripts
export PYTHONUNBUFFERED=1                # logs in order, and nothing lost when a step is killed at its time limit
unset PYTHONDONTWRITEBYTECODE            # let imports write .pyc into $SITE: vLLM's imports took 32 s without

# Offline: there is no network on that machine; without these, HF libraries try (and time out on) the Hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false

# vLLM 0.26's sampler imports the FlashInfer backend unconditionally on CUDA unless this is 0; flashinfer is not
# transferred, so without it the EngineCore dies with "No module named 'flashinfer'" (lab run 3). The trainer
# needs it too in colocate mode (in-process vLLM).
export VLLM_USE_FLASHINFER_SAMPLER=0
# One host: vLLM's rendezvous on loopback. (NCCL still bootstraps over the VM's address; that works.)
export VLLM_HOST_IP=${VLLM_HOST_IP:-127.0.0.1}
# NCCL says *why* it fails (e.g. "Duplicate GPU detected" when trainer and server share a GPU) instead of a bare
# "invalid usage".
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# NVLink multicast must stay off on the shared multi-GPU hosts (it can take the host's GPUs out of service):
# the machines set these; keep them, also for processes started with their own environment.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

mkdir -p "$WH" "$SCRATCH" "$LOGDIR" 2>/dev/null || true
