"""Helpers of scripts/study_smollm2.sh.

    python scripts/study_checkpoints.py RUN_DIR...   the last step every run has a complete checkpoint of (0: none)
    python scripts/study_checkpoints.py --best EVAL  the model whose `<name>-heldout` eval is the most accurate
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from looper_cli.training import complete_checkpoints


def common_step(run_dirs: list[Path]) -> int:
    shared = set.intersection(*(set(complete_checkpoints(d)) for d in run_dirs))
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
