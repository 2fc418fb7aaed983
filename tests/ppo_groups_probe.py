"""`looper ARGS` as one process of a torchrun launch (what each child of
`looper ppo --gpus N` runs), noting what each Regime W reward call scores:
one JSON line per call, {"question_id": [...], "tokens": N, "rewards": [...]}, in
$PROBE_DIR/rank-<RANK>.jsonl. Used by tests/test_ppo_rollout.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from looper_cli.cli import main
from looper_cli.ppo import RegimeWReward

score = RegimeWReward.__call__


def noted_score(self: RegimeWReward, **columns: Any) -> list[float]:
    rewards = score(self, **columns)
    note = {"question_id": list(columns["question_id"]), "tokens": sum(map(len, columns["completion_ids"])),
            "rewards": rewards}
    with (Path(os.environ["PROBE_DIR"]) / f"rank-{os.environ['RANK']}.jsonl").open("a") as f:
        f.write(json.dumps(note) + "\n")
    return rewards


RegimeWReward.__call__ = noted_score  # type: ignore[method-assign]
sys.argv = ["looper", *sys.argv[1:]]
main()
