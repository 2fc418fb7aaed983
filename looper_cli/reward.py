"""The reward (public by design; the scores come from the compiled core):

    reward_i = alpha * correct_i + beta * s_wm_i - gamma * length_penalty_i
    length_penalty_i = min(1, max(0, tokens_i / median_tokens_of_group - 1))

With `shaping="correct"` (an experiment, not the spec's reward) the coherence and
length terms count only for correct solutions:

    reward_i = alpha * correct_i + correct_i * (beta * s_wm_i - gamma * length_penalty_i)

Issue 16's study showed why one would try it: under PPO, with most samples wrong,
the spec's reward is raised more cheaply by short, agreeing answers than by right
ones. Gated, a wrong answer earns nothing whatever its coherence or length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt


@dataclass
class RewardWeights:
    alpha: float = 1.0  # correctness
    beta: float = 0.5  # Regime W coherence (s_wm)
    gamma: float = 0.1  # length penalty
    shaping: Literal["all", "correct"] = "all"  # which solutions the beta and gamma terms apply to


def length_penalties(tokens: npt.ArrayLike, offsets: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per solution: how far past its group's median length it runs, in [0, 1]."""
    toks = np.asarray(tokens, dtype=np.float64)
    bounds = np.asarray(offsets, dtype=np.int64)
    out = np.zeros_like(toks)
    for start, end in zip(bounds[:-1], bounds[1:]):
        median = float(np.median(toks[start:end])) if end > start else 0.0
        if median > 0:
            out[start:end] = np.clip(toks[start:end] / median - 1.0, 0.0, 1.0)
    return out


def rewards(correct: npt.ArrayLike, s_wm: npt.ArrayLike, tokens: npt.ArrayLike,
            offsets: npt.ArrayLike, weights: RewardWeights) -> npt.NDArray[np.float64]:
    """The reward per solution; unknown correctness (-1) counts as 0."""
    is_correct = (np.asarray(correct) == 1).astype(np.float64)
    shaping = (weights.beta * np.asarray(s_wm, dtype=np.float64)
               - weights.gamma * length_penalties(tokens, offsets))
    if weights.shaping == "correct":
        shaping = shaping * is_correct
    return weights.alpha * is_correct + shaping
