"""looper merge (adapter -> plain transformers checkpoint) and the
multi-GPU relaunch command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def test_merge_gives_a_plain_checkpoint_with_the_adapters_outputs(tiny_model: Path, tmp_path: Path,
                                                                    cli) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from looper_cli.models import load_model
    from looper_cli.sft import SFTStageConfig, run_sft

    adapter, merged = tmp_path / "sft", tmp_path / "merged"
    run_sft(SFTStageConfig(base_model=str(tiny_model), data="synthetic:16", output=adapter, max_steps=2,
                           batch_size=4, lr=1e-2, max_length=192, lora_r=8, save_steps=100))
    result = cli("merge", "--adapter", adapter, "--output", merged)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    AutoTokenizer.from_pretrained(merged)

    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        expected = load_model(str(tiny_model), adapter=adapter, device="cpu")(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
        base = load_model(str(tiny_model), device="cpu")(ids).logits
    assert torch.allclose(expected, got, atol=1e-4)
    assert not torch.allclose(base, got, atol=1e-4)


def test_merge_refuses_a_folder_that_is_not_an_adapter(tiny_model: Path, tmp_path: Path, cli) -> None:
    result = cli("merge", "--adapter", tiny_model, "--output", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("looper: error:") and len(result.stderr.strip().splitlines()) == 1


def test_launch_command_reruns_the_same_command_under_accelerate(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from looper_cli.launch import launch_command

    monkeypatch.delenv("NNODES", raising=False)
    argv = ["sft", "--base-model", "m", "--gpus", "8"]
    command = launch_command(8, None, argv)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "8"
    assert command[-len(argv) - 2:] == ["-m", "looper_cli", *argv]
    from accelerate.commands.launch import launch_command_parser

    parsed = launch_command_parser().parse_args(command[3:])  # accelerate's own parser reads it as meant
    assert parsed.module and parsed.training_script == "looper_cli" and parsed.training_script_args == argv
    assert parsed.multi_gpu and parsed.mixed_precision == "bf16"

    fsdp = tmp_path / "fsdp.yaml"
    fsdp.write_text("distributed_type: FSDP\n")
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    command = launch_command(8, fsdp, argv)
    flags = dict(zip(command[3:-len(argv) - 2:2], command[4:-len(argv) - 2:2]))
    assert flags == {"--config_file": str(fsdp), "--num_processes": "16", "--num_machines": "2",
                     "--machine_rank": "1", "--main_process_ip": "10.0.0.1", "--main_process_port": "29500"}


def test_launch_user_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from looper_cli.errors import UserError
    from looper_cli.launch import launch_command, maybe_relaunch

    with pytest.raises(UserError, match="accelerate config file not found"):
        launch_command(2, tmp_path / "missing.yaml", ["sft"])
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(UserError, match="MASTER_ADDR"):
        launch_command(2, None, ["sft"])
    with pytest.raises(UserError, match="GPU"):
        maybe_relaunch(64, None)  # more than this machine has
    monkeypatch.setenv("LOOPER_LAUNCHED", "1")
    maybe_relaunch(64, None)  # a launched child never relaunches
