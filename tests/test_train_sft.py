"""looper sft on the tiny model: it trains, saves an adapter that loads back,
resumes after a SIGKILL exactly where an uninterrupted run would be, and
turns bad inputs into one-line errors (exit 2)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

STEPS = 8
SFT_OPTIONS = dict(data="synthetic:48", max_steps=STEPS, batch_size=4, lr=5e-3, max_length=192,
                   save_steps=2, lora_r=8, logging_steps=1)


def _config_file(tmp_path: Path) -> Path:
    """The same options as a --config file (also checks TOML + CLI merging)."""
    from looper_cli.config import to_toml

    path = tmp_path / "run.toml"
    path.write_text(to_toml({"sft": SFT_OPTIONS}))
    return path


def _adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _wait_for_checkpoint_then_kill(args: list[str], checkpoint: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "looper_cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (checkpoint / "trainer_state.json").is_file():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_sft_trains_and_resumes_after_sigkill_like_an_uninterrupted_run(tiny_model: Path, tmp_path: Path,
                                                                          cli) -> None:
    """An uninterrupted run (in-process) learns and saves a loadable adapter.
    A CLI run killed after its first checkpoint and resumed ends at the same
    global step with the same adapter weights: optimizer, scheduler, data
    order and RNG were all restored."""
    import torch

    from looper_cli.models import load_model
    from looper_cli.sft import SFTStageConfig, run_sft

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    summary = run_sft(SFTStageConfig(base_model=str(tiny_model), output=straight, **SFT_OPTIONS))
    assert summary["steps"] == STEPS and summary["mode"] == "lora" and summary["tokens_per_s"] > 0
    assert summary["second_half_tokens_per_s"] > 0 and summary["peak_gpu_gib"] is None  # CPU
    assert summary["final_loss"] < summary["first_loss"] - 0.01  # it learned something
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "config.toml",
                 "summary.json"):
        assert (straight / name).is_file(), name
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        base = load_model(str(tiny_model), device="cpu")(ids).logits
        tuned = load_model(str(tiny_model), adapter=straight, device="cpu")(ids).logits
    assert not torch.allclose(base, tuned, atol=1e-4)

    args = ["sft", "--base-model", str(tiny_model), "-o", str(killed), "--config", str(_config_file(tmp_path))]
    _wait_for_checkpoint_then_kill(args, killed / "checkpoint-2")
    assert not (killed / "summary.json").exists()
    refused = cli(*args)
    assert refused.returncode == 2 and "--resume" in refused.stderr  # never silently restarts over checkpoints
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = json.loads((killed / "summary.json").read_text())
    assert Path(after["resumed_from"]).name.startswith("checkpoint-") and after["steps"] == STEPS
    assert 0 < int(Path(after["resumed_from"]).name.split("-")[1]) < STEPS  # continued, not restarted
    a, b = _adapter_weights(straight), _adapter_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key

    finished = cli(*args, "--resume")  # a finished stage is skipped, its summary kept
    assert finished.returncode == 0
    assert json.loads((killed / "summary.json").read_text()) == after


def test_sft_full_fine_tune_saves_a_plain_model(tiny_model: Path, tmp_path: Path) -> None:
    from looper_cli.models import is_adapter_dir
    from looper_cli.sft import SFTStageConfig, run_sft

    out = tmp_path / "full"
    summary = run_sft(SFTStageConfig(base_model=str(tiny_model), data="synthetic:16", output=out, full=True,
                                     max_steps=2, batch_size=4, max_length=192, save_steps=100))
    assert summary["mode"] == "full" and summary["steps"] == 2
    assert (out / "config.json").is_file() and not is_adapter_dir(out)


@pytest.mark.parametrize("case", ["missing-data", "empty-data", "no-base", "bad-base", "gpus", "liger"])
def test_sft_user_errors_are_one_line(case: str, tiny_model: Path, tmp_path: Path, cli) -> None:
    if case == "liger" and importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here: --liger is not a mistake")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = {
        "missing-data": ["--base-model", str(tiny_model), "--data", str(tmp_path / "nope.jsonl")],
        "empty-data": ["--base-model", str(tiny_model), "--data", str(empty)],
        "no-base": ["--data", "synthetic:4"],
        "bad-base": ["--base-model", str(tmp_path / "no-model"), "--data", "synthetic:4"],
        "gpus": ["--base-model", str(tiny_model), "--data", "synthetic:4", "--gpus", "64"],
        "liger": ["--base-model", str(tiny_model), "--data", "synthetic:4", "--max-steps", "1", "--liger"],
    }[case]
    result = cli("sft", *args, "-o", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("looper: error:"), result.stderr


def test_sft_with_compiled_layers_trains_like_eager_and_saves_the_same_adapter(tiny_model: Path,
                                                                               tmp_path: Path) -> None:
    """--compile changes how the layers run, not what is learned: the same
    steps give the same adapter (same keys, no `_orig_mod` prefixes)."""
    import torch

    from looper_cli.sft import SFTStageConfig, run_sft

    options = dict(base_model=str(tiny_model), data="synthetic:16", max_steps=3, batch_size=4, lr=5e-3,
                   max_length=192, save_steps=100, lora_r=8, lora_dropout=0.0)
    eager = run_sft(SFTStageConfig(output=tmp_path / "eager", **options))
    compiled = run_sft(SFTStageConfig(output=tmp_path / "compiled", compile_layers=True, activation_budget=0.5,
                                      **options))
    assert eager["compiled_layers"] == 0 and compiled["compiled_layers"] == 2  # the tiny model's layers
    a, b = _adapter_weights(tmp_path / "eager"), _adapter_weights(tmp_path / "compiled")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4), key


def test_activation_budget_out_of_range_is_one_line(tiny_model: Path, tmp_path: Path, cli) -> None:
    result = cli("sft", "--base-model", str(tiny_model), "--data", "synthetic:4", "--max-steps", "1",
                 "--compile", "--activation-budget", "1.5", "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "--activation-budget" in result.stderr, result.stderr[-2000:]
