"""Regime W scoring of solution groups, plus the reward, in one call.

The compiled core gives every score and every arm; its bandit picks the
arm per group and learns from groups with known gold. This module only
moves data in and out, applies the public reward formula, and keeps the
bandit's state in a JSON file next to the run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from looper_cli.errors import UserError
from looper_cli.jsonl import atomic_write_text
from looper_cli.reward import RewardWeights, rewards

BANDIT_STATE_NAME = "bandit.json"
# Beside the core's own fields in bandit.json (which the core ignores when
# reading): the groups the bandit has learned from, so rescoring a file never
# teaches it the same evidence twice.
TAUGHT_KEY = "taught_groups"


@dataclass
class ScoredGroups:
    """Per-solution arrays, flat over groups; group g is offsets[g]:offsets[g+1]."""

    offsets: npt.NDArray[np.int64]
    answer: npt.NDArray[np.float64]  # NaN when none
    correct: npt.NDArray[np.int8]  # 1, 0, or -1 when gold is unknown
    s_end: npt.NDArray[np.float64]
    s_path: npt.NDArray[np.float64]
    s_cf: npt.NDArray[np.float64]
    s_wm: npt.NDArray[np.float64]
    arm: list[str]
    reward: npt.NDArray[np.float64]
    arm_scores: npt.NDArray[np.float64]  # (N, 8)
    informative_groups: int

    def row_fields(self, i: int) -> dict[str, Any]:
        """The Regime W fields of solution i, as the rollout schema names them."""
        answer = float(self.answer[i])
        return {
            "answer": None if np.isnan(answer) else answer,
            "correct": None if self.correct[i] < 0 else bool(self.correct[i]),
            "s_end": float(self.s_end[i]),
            "s_path": float(self.s_path[i]),
            "s_cf": float(self.s_cf[i]),
            "s_wm": float(self.s_wm[i]),
            "arm": self.arm[i],
            "reward": float(self.reward[i]),
        }


def load_bandit(path: str | Path | None, seed: int = 0) -> Any:
    """The bandit saved at `path`, or a fresh seeded one if there is none."""
    from regime_w_core import Bandit

    if path is not None and Path(path).is_file():
        try:
            return Bandit.from_json(Path(path).read_text())
        except ValueError as err:
            raise UserError(f"bandit state {path} is damaged: {err}") from None
    return Bandit(seed=seed)


def save_bandit(bandit: Any, path: str | Path, taught: Iterable[str] | None = None) -> None:
    """The core's state, plus the keys of the groups it learned from when given."""
    if taught is None:
        atomic_write_text(path, bandit.to_json())
        return
    state = json.loads(bandit.to_json())
    state[TAUGHT_KEY] = sorted(taught)
    atomic_write_text(path, json.dumps(state))


def load_taught_groups(path: str | Path) -> set[str]:
    """The keys of the groups the bandit saved at `path` has learned from."""
    if not Path(path).is_file():
        return set()
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"bandit state {path} is damaged") from None
    return set(state.get(TAUGHT_KEY, [])) if isinstance(state, dict) else set()


def group_key(question_id: Any, texts: Sequence[str], gold: Any) -> str:
    """One group's evidence: its question, its solutions and its gold."""
    gold = None if gold is None else float(gold)  # 12 and 12.0 are the same gold
    digest = hashlib.sha1(json.dumps([str(question_id), list(texts), gold]).encode("utf-8")).hexdigest()
    return digest[:16]


def require_arm(arm: str | None) -> None:
    """None, or a Regime W arm name (W1..M4); else a UserError listing them."""
    import regime_w_core as rw

    if arm is not None and arm not in rw.ARMS:
        raise UserError(f"--coherence-arm must be one of {', '.join(rw.ARMS)}, not {arm!r}")


def score_groups(
    groups: Sequence[Sequence[str]],
    tokens: Sequence[Sequence[int]],
    bandit: Any,
    golds: Sequence[float | None] | None = None,
    questions: Sequence[str] | None = None,
    weights: RewardWeights | None = None,
    learn: bool = True,
    arm: str | None = None,
) -> ScoredGroups:
    """Score groups, pick arms (Thompson sampling while learning, the best
    posterior mean otherwise, or always `arm` when given), update the bandit
    from known gold, and add the reward."""
    import regime_w_core as rw

    scores = rw.score_groups([list(g) for g in groups], golds=golds, questions=questions)
    has_gold = golds is not None and any(g is not None for g in golds)
    if arm is None:
        arm_index, s_wm = bandit.assign(scores, explore=learn and has_gold)
    else:  # the bandit still learns below; its choice is just not used
        column = rw.ARMS.index(arm)
        arm_index = np.full(scores.n_solutions, column, dtype=np.int64)
        s_wm = np.ascontiguousarray(np.asarray(scores.arm_scores)[:, column])
    informative = bandit.update(scores) if learn and has_gold else 0
    flat_tokens = np.fromiter((t for g in tokens for t in g), dtype=np.float64)
    if flat_tokens.shape[0] != scores.n_solutions:
        raise ValueError("token counts do not match the solutions")
    reward = rewards(scores.correct, s_wm, flat_tokens, scores.offsets, weights or RewardWeights())
    return ScoredGroups(
        offsets=scores.offsets, answer=scores.answer, correct=scores.correct,
        s_end=scores.s_end, s_path=scores.s_path, s_cf=scores.s_cf, s_wm=s_wm,
        arm=[rw.ARMS[a] for a in arm_index], reward=reward,
        arm_scores=scores.arm_scores, informative_groups=informative,
    )
