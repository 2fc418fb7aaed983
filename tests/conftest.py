"""Shared fixtures: the shared GSM8K data, the tiny model, and a CLI runner.

Tiny models run with one thread: on 2 cores that is ~15x faster than the
default thread pool.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LOOPER_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert (SHARED_DATA / "gsm8k" / "train.jsonl").is_file(), f"shared data missing at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def gsm8k_dir(shared_data: Path) -> Path:
    return shared_data / "gsm8k"


@pytest.fixture(scope="session")
def platinum_dir(shared_data: Path) -> Path:
    return shared_data / "gsm8k_platinum"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama + BPE tokenizer trained on synthetic problems."""
    import torch

    torch.set_num_threads(1)
    from looper_cli.synthetic import synthetic_problems
    from looper_cli.tiny import build_tiny_model

    rows = synthetic_problems(300, seed=0)
    out = tmp_path_factory.mktemp("tiny")
    return build_tiny_model(out, [r["question"] + "\n" + r["answer"] for r in rows])


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `looper ARGS` as a user would, in a subprocess."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "looper_cli", *map(str, args)], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


# Steps/lr picked so the model writes `#### N` answers and gets a few of the
# first synthetic train problems right (~6% at temperature 1): a non-zero
# reward signal for rollout/prefs/pipeline tests, in ~30-60 s on 2 cores.
WARM_SFT = dict(data="synthetic:64", full=True, max_steps=400, lr=3e-3, batch_size=8,
                max_length=256, save_steps=100_000, logging_steps=50)


@pytest.fixture(scope="session")
def warm_tiny_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_model` after a short full fine-tune (looper's own run_sft) on
    synthetic problems: a full model folder (config.json + tokenizer)."""
    import torch

    torch.set_num_threads(1)
    from looper_cli.sft import SFTStageConfig, run_sft

    out = tmp_path_factory.mktemp("warm") / "sft"
    run_sft(SFTStageConfig(base_model=str(tiny_model), output=out, **WARM_SFT))  # type: ignore[arg-type]
    return out
