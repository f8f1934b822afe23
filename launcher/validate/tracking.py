"""Rules on tracking: grpo.report_to (TRL's key) names integrations transformers knows, the tracking.* values
are ones W&B accepts, and W&B is installed where the job runs this very Python. Pure, no imports of W&B or
TensorBoard: a package is only looked up (find_spec) on the interpreter the job will use.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from typing import Any

from launcher.config.schema import LaunchConfig
from launcher.validate.problems import Facts, Problem

# transformers' INTEGRATION_TO_CALLBACK (5.x) plus its two words "all" and "none"
INTEGRATIONS = ("azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow", "mlflow",
                "neptune", "swanlab", "tensorboard", "trackio", "wandb")
KEPT_ACROSS_REQUEUES = ("wandb", "tensorboard")  # the ones the launcher keeps as one run per job
WANDB_MODES = ("online", "offline", "disabled")
PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard"}
INSTALL_HINT = "pip install 'launcher[tracking]'"


def report_to_list(value: Any) -> list[str]:
    """grpo.report_to as a list: None, "none" and [] -> []; "wandb" or "wandb,tensorboard" -> a list."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    names = [item.strip() for item in items if item.strip()]
    return [] if names == ["none"] else names


def tracked(cfg: LaunchConfig) -> list[str]:
    """The backends the launcher keeps across requeues that grpo.report_to names ("all": both)."""
    names = report_to_list((cfg.grpo or {}).get("report_to"))
    return [b for b in KEPT_ACROSS_REQUEUES if b in names or "all" in names]


def check_tracking(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    problems = []
    value = (cfg.grpo or {}).get("report_to")
    if value is not None and not isinstance(value, (str, list, tuple)):
        return [Problem(("grpo.report_to",), f"{value!r}: give a name or a list, e.g. [wandb, tensorboard]")]
    names = report_to_list(value)
    unknown = [n for n in names if n not in INTEGRATIONS + ("all",)]
    if unknown:
        problems.append(Problem(("grpo.report_to",), f"unknown integration(s) {', '.join(unknown)}; "
                                f"known: {', '.join(INTEGRATIONS)}, all, none"))
    if "all" in names and len(names) > 1:
        problems.append(Problem(("grpo.report_to",), "'all' already means every installed one"))
    tracking = cfg.tracking
    if tracking.wandb_mode is not None and tracking.wandb_mode not in WANDB_MODES:
        problems.append(Problem(("tracking.wandb_mode",), f"{tracking.wandb_mode!r} is none of "
                                f"{', '.join(WANDB_MODES)} (null: offline when cluster.offline, else online)"))
    for key in ("project", "entity", "group"):
        text = getattr(tracking, key)
        if text is not None and (not str(text).strip() or any(c in str(text) for c in "\n\r/\\#?%:")):
            problems.append(Problem((f"tracking.{key}",), f"{text!r}: W&B names cannot be empty or "
                                    "hold a newline or any of / \\ # ? % :"))
    for tag in tracking.tags:
        if not str(tag).strip() or len(str(tag)) > 64 or any(c in str(tag) for c in "\n,"):
            problems.append(Problem(("tracking.tags",),
                                    f"{tag!r} is not a W&B tag (1 to 64 characters, one line, no comma)"))
    problems += _installed(cfg, names)
    return problems


def _installed(cfg: LaunchConfig, names: list[str]) -> list[Problem]:
    """A backend missing from this Python is an error only when the job runs this Python on the host (no
    cluster.python, no container); otherwise the trainer checks its own Python first thing (launcher.train.tracking)."""
    runtime = getattr(cfg.cluster.container.runtime, "value", cfg.cluster.container.runtime)
    if cfg.cluster.python or cfg.cluster.container.image or runtime not in (None, "none"):
        return []
    return [Problem(("grpo.report_to",), f"grpo.report_to names {name}, which is not installed in {sys.executable} "
                    f"(the job's Python): {INSTALL_HINT}")
            for name in KEPT_ACROSS_REQUEUES if name in names and find_spec(PACKAGES[name]) is None]
