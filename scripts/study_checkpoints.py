"""Helpers of scripts/study_smollm2.sh.

    python scripts/study_checkpoints.py RUN_DIR...   the last step every run has a complete checkpoint of (0: none)
    python scripts/study_checkpoints.py --best EVAL  the model whose `<name>-heldout` eval is the most accurate
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def complete_steps(run_dir: Path) -> set[int]:
    """Steps of the checkpoints a kill did not cut (trainer_state.json is written last but one)."""
    steps = set()
    for child in run_dir.glob("checkpoint-*"):
        suffix = child.name.split("-", 1)[1]
        if suffix.isdigit() and (child / "trainer_state.json").is_file() and \
                (child / "adapter_model.safetensors").is_file():
            steps.add(int(suffix))
    return steps


def common_step(run_dirs: list[Path]) -> int:
    shared = set.intersection(*(complete_steps(d) for d in run_dirs))
    return max(shared, default=0)


def best_on_held_out(eval_dir: Path) -> str:
    scores = {}
    for summary in sorted(eval_dir.glob("*-heldout/summary.json")):
        scores[summary.parent.name[: -len("-heldout")]] = json.loads(summary.read_text())["accuracy"]
    if not scores:
        sys.exit(f"no held-out evals in {eval_dir}")
    return max(scores, key=lambda name: scores[name])


if __name__ == "__main__":
    if sys.argv[1] == "--best":
        print(best_on_held_out(Path(sys.argv[2])))
    else:
        print(common_step([Path(a) for a in sys.argv[1:]]))
