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


# Runs `looper` once per argv inside ONE interpreter (imports paid once), the
# same `main()` a user's shell runs, and reports each run's exit code and
# stderr; an exception `main()` lets through is reported as the traceback the
# user would have seen.
_BATCH_RUNNER = r"""
import contextlib, io, json, sys, traceback
from looper_cli.cli import main
results = []
for argv in json.load(sys.stdin):
    err, out, code = io.StringIO(), io.StringIO(), 0
    sys.argv = ["looper", *argv]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"argv": argv, "code": code, "stderr": err.getvalue(), "stdout": out.getvalue()})
print("\n" + json.dumps(results))
"""


def run_cli_batch(cases: list[list[str]], cwd: Path | None = None, timeout: float = 600) -> list[dict]:
    """`looper ARGV` for each argv, as `run_cli` would, but in one process:
    [{"argv", "code", "stderr", "stdout"}, ...] in order."""
    import json

    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _BATCH_RUNNER], input=json.dumps([list(map(str, c)) for c in cases]),
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().rsplit("\n", 1)[-1])


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
