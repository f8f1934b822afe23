"""The smoke experiment's reward (conf/reward/smoke.yaml): one a random tiny policy sometimes earns, so
rewards vary within a group, the advantages and gradients are non-zero and the mean reward rises within a
few dozen CPU steps -- what `accuracy_reward` never gives the random smoke model (always 0).

`letter_share`: the share of letters among a completion's non-space characters. The smoke tokenizer was
trained on math text, so about 30 % of its tokens are words and the rest hold digits or symbols: a random
completion scores about 0.3, and the policy raises it by moving probability onto the word tokens, one
direction in the tiny model's hidden space. An empty completion scores 0.
"""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """A completion as TRL passes it: a string, or (conversational) a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))


def letter_share(completions: list, **kwargs: Any) -> list[float]:
    scores = []
    for completion in completions:
        chars = [c for c in completion_text(completion) if not c.isspace()]
        scores.append(sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0)
    return scores
