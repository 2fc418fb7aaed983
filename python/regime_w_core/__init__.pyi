"""Typed face of the compiled Regime W core.

The logic lives only in the compiled extension; these stubs are checked
against it (``python -m mypy.stubtest regime_w_core``).
"""

from typing import Literal, Sequence, final

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = [
    "ARMS",
    "ARM_NAMES",
    "Answer",
    "BatchScores",
    "Bandit",
    "ExtractMode",
    "answers_equal",
    "extract_answer",
    "extract_answers",
    "pairwise_similarity",
    "score_groups",
    "__version__",
]

#: The eight arms, in index order (0..7).
ARMS: list[str]  # ["W1", "W2", "W3", "W4", "M1", "M2", "M3", "M4"]
#: Human names of the arms, same order.
ARM_NAMES: list[str]

ExtractMode = Literal["auto", "strict", "flexible"]

@final
class Answer:
    """A final answer extracted from a solution text."""

    value: float
    """The normalised numeric value."""
    text: str
    """The matched answer text, as written."""
    flexible: bool
    """True when no answer marker was found and the last number was taken."""

def extract_answer(text: str | bytes, mode: ExtractMode = "auto") -> Answer | None:
    """The one answer extractor of the product.

    ``strict``: only ``#### N`` (lm-eval's strict match). ``flexible``: the last
    number in the text. ``auto``: the markers (``####``, ``The answer is``,
    ``Answer:``, ``A:``, ``\\boxed{}``), then the last number (flagged
    ``flexible``). R1-style ``<think>...</think>`` blocks are skipped when an
    answer follows them. Bytes are decoded as UTF-8 with replacement.
    """

def extract_answers(texts: Sequence[str], mode: ExtractMode = "auto") -> list[Answer | None]:
    """``extract_answer`` over many texts, in parallel without the GIL."""

def answers_equal(a: float | None, b: float | None) -> bool:
    """Numeric equality with the small relative tolerance Regime W uses."""

@final
class BatchScores:
    """Scores of a batch of groups; arrays are per solution unless named group_*.

    Solutions of group ``g`` are rows ``offsets[g]:offsets[g+1]``.
    """

    n_groups: int
    n_solutions: int
    offsets: npt.NDArray[np.int64]  # (G+1,)
    answer: npt.NDArray[np.float64]  # (N,) NaN where no answer
    answer_flexible: npt.NDArray[np.bool_]  # (N,)
    correct: npt.NDArray[np.int8]  # (N,) 1 / 0, or -1 when gold is unknown
    s_end: npt.NDArray[np.float64]  # (N,) in [0, 1]
    s_path: npt.NDArray[np.float64]  # (N,) in [0, 1]
    s_cf: npt.NDArray[np.float64]  # (N,) in [0, 1]
    arm_scores: npt.NDArray[np.float64]  # (N, 8): s_wm under each arm
    group_s_end: npt.NDArray[np.float64]  # (G,) largest answer cluster / K
    group_arm_auc: npt.NDArray[np.float64]  # (G, 8) within-group AUC, -1 if uninformative

def score_groups(
    groups: Sequence[Sequence[str]],
    golds: Sequence[str | float | None] | None = None,
    questions: Sequence[str | None] | None = None,
) -> BatchScores:
    """Score many groups of solutions at once (rayon, GIL released).

    ``golds`` are gold answers (a number, or a text the extractor reads);
    ``questions`` give the numbers that ground the counterfactual score.
    Raises ValueError for an empty group or mismatched lengths, TypeError for
    a non-string solution.
    """

def pairwise_similarity(
    texts: Sequence[str],
    pairs: npt.NDArray[np.int64] | npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """Path similarity over any set of texts.

    With ``pairs`` of shape (P, 2) (any integer array-like): a (P,) array,
    one value per index pair.
    Without: the full symmetric (n, n) matrix. Each text is parsed once.
    """

@final
class Bandit:
    """Seeded Thompson sampling over the eight arms (Beta posteriors)."""

    def __new__(cls, seed: int = 0, prior_alpha: float = 1.0, prior_beta: float = 1.0) -> Bandit: ...
    @property
    def seed(self) -> int:
        """The seed the bandit was created with (kept in its JSON state)."""
    @property
    def alpha(self) -> npt.NDArray[np.float64]: ...  # (8,)
    @property
    def beta(self) -> npt.NDArray[np.float64]: ...  # (8,)
    @property
    def posterior_mean(self) -> npt.NDArray[np.float64]: ...  # (8,)
    @property
    def n_updates(self) -> int: ...
    def best_arm(self) -> int:
        """The arm with the best posterior mean (used without gold)."""
    def choose(self, n_groups: int) -> npt.NDArray[np.int64]:
        """One Thompson-sampled arm per group; advances the seeded stream.
        At most 10,000,000 groups per call (ValueError above)."""
    def assign(
        self, scores: BatchScores, explore: bool = True
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Pick an arm per group (Thompson when ``explore``, else best mean)
        and return (arm index per solution, s_wm per solution)."""
    def update(self, scores: BatchScores) -> int:
        """Full-information update from groups with known gold; returns how
        many groups were informative (mixed correct and incorrect)."""
    def to_json(self) -> str: ...
    @staticmethod
    def from_json(text: str) -> Bandit: ...
