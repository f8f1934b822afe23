"""LoRA in the job (model.lora, a LoraSpec in the plan): peft's LoraConfig for GRPOTrainer's peft_config, once
the loaded model is known to have the modules it targets.

GRPOTrainer does the rest (TRL 1.16): it wraps the model with peft's get_peft_model; at each weight sync
TRL's VLLMGeneration merges the adapter, sends the merged weights under the base model's names and unmerges,
so the server always samples from base + adapter; Trainer saves a PeftModel's checkpoints as the adapter
(adapter_model.safetensors + adapter_config.json) and loads it back on resume. peft is imported here only,
in the job (the login node never imports it).
"""

from __future__ import annotations

from typing import Any, Optional

from launcher.train.errors import JobError
from launcher.train.report import say
from launcher.validate.lora import ALL_LINEAR, TARGETS_KEY, unknown_targets

TASK_TYPE = "CAUSAL_LM"  # GRPO trains causal LMs only


def default_targets(model: Any) -> list[str]:
    """peft's default target modules for the model's architecture (what target_modules=None picks)."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in DEFAULTS:
        raise JobError(f"{TARGETS_KEY}: peft has no default target modules for model type {model_type!r}: name "
                       f"them (e.g. {TARGETS_KEY}=[q_proj,v_proj]) or use {ALL_LINEAR}")
    return list(DEFAULTS[model_type])


def checked_targets(model: Any, lora: Any, model_name: str) -> Any:
    """The target modules peft gets (all-linear, or names: peft's defaults spelled out when none are set), after checking the loaded model has every one named (a JobError names
    model.lora.target_modules and the module names there are)."""
    targets = lora.target_modules
    if targets == ALL_LINEAR:
        return targets
    names = [n for n, _ in model.named_modules()]
    wanted = list(targets) if targets is not None else default_targets(model)
    missing = unknown_targets(names, wanted)
    if missing:
        leaves = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if n and not list(m.children())})
        raise JobError(f"{TARGETS_KEY}: {', '.join(missing)}: no such module in {model_name} (its layers are "
                       f"named {', '.join(leaves)}; or use {ALL_LINEAR})")
    return wanted


def peft_config(lora: Any, targets: Any):
    """peft's LoraConfig from a LoraSpec, as TRL's get_peft_config builds it from --use_peft --lora_* flags."""
    try:
        from peft import LoraConfig
    except ImportError as e:
        raise JobError(f"model.lora needs peft in the job's Python ({e}): install the launcher's train extra "
                       "(pip install 'launcher[train]')") from None
    return LoraConfig(task_type=TASK_TYPE, r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=targets, modules_to_save=lora.modules_to_save, bias="none")


def lora_config_for(model: Any, lora: Any, model_name: str, is_main: bool) -> Optional[Any]:
    """GRPOTrainer's peft_config for the plan's model.lora (None: full fine-tuning)."""
    if lora is None:
        return None
    targets = checked_targets(model, lora, model_name)
    config = peft_config(lora, targets)
    if is_main:
        named = targets if isinstance(targets, str) else ", ".join(targets)
        why = f" (peft's default for {model.config.model_type})" if lora.target_modules is None else ""
        say(f"LoRA: rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g}, target modules {named}{why}; "
            "checkpoints hold the adapter, the server gets the merged weights")
    return config


def trainable_summary(model: Any) -> str:
    """'N of M parameters trainable' of the model GRPOTrainer trains (a PeftModel with LoRA)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable / 1e6:.3f} M of {total / 1e6:.1f} M parameters trainable ({100 * trainable / total:.2f} %)"


def fill_script_peft_config(arguments: dict, lora: Any, model_name: str, is_main: bool) -> None:
    """trainer.script: the plan's LoRA becomes the GRPOTrainer call's peft_config unless the script passes its
    own (the script's wins) or a model already wrapped by peft. A model given by name is not loaded yet: its
    target modules are peft's to check."""
    if lora is None:
        return
    model = arguments.get("model")
    if arguments.get("peft_config") is not None or _is_peft_model(model):
        if is_main:
            say("LoRA: your script passes its own peft_config (or a PeftModel); model.lora is not used")
        return
    if isinstance(model, str):
        arguments["peft_config"] = peft_config(lora, lora.target_modules)
        if is_main:
            say(f"LoRA: rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g} from model.lora")
        return
    arguments["peft_config"] = lora_config_for(model, lora, model_name, is_main)


def _is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)
