"""The shipped pipeline configs resolve against every stage they name."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_pipeline_config_tables_resolve(path: Path) -> None:
    from looper_cli.config import load_toml, resolve
    from looper_cli.dpo import DPOStageConfig
    from looper_cli.evaluate import EvalStageConfig
    from looper_cli.ppo import PPOStageConfig
    from looper_cli.prefs import PrefsStageConfig
    from looper_cli.rollout import RolloutStageConfig
    from looper_cli.sft import SFTStageConfig

    stages = {"sft": SFTStageConfig, "dpo": DPOStageConfig, "ppo": PPOStageConfig, "rollout": RolloutStageConfig,
              "prefs": PrefsStageConfig, "eval": EvalStageConfig}
    table = load_toml(path)
    assert set(table["stages"]) <= set(stages)
    for section in [name for name in table if isinstance(table[name], dict)]:
        cfg = resolve(stages[section], section, path)  # unknown keys or wrong types raise UserError
        if hasattr(cfg, "base_model") and section in ("sft", "rollout") and "base_model" in table:
            assert cfg.base_model == table["base_model"]


def test_recompute_defaults_to_on_with_a_gpu_and_follows_the_option(tmp_path: Path) -> None:
    from looper_cli.training import TrainOptions, trl_args

    assert trl_args(TrainOptions(), tmp_path, "cuda:0")["gradient_checkpointing"] is True
    assert trl_args(TrainOptions(), tmp_path, "cpu")["gradient_checkpointing"] is False
    off = TrainOptions(gradient_checkpointing=False)
    assert trl_args(off, tmp_path, "cuda:0")["gradient_checkpointing"] is False
    assert trl_args(TrainOptions(), tmp_path, "cpu")["use_liger_kernel"] is False
    compiled = TrainOptions(compile_layers=True)  # the compiler's activation budget recomputes instead
    assert trl_args(compiled, tmp_path, "cuda:0")["gradient_checkpointing"] is False
    both = TrainOptions(compile_layers=True, gradient_checkpointing=True)
    assert trl_args(both, tmp_path, "cuda:0")["gradient_checkpointing"] is True
    liger = TrainOptions(compile_layers=True, liger=True)  # the compiler fuses what Liger would
    assert trl_args(liger, tmp_path, "cuda:0")["use_liger_kernel"] is False


def test_trl_config_builds_the_stage_config_for_this_process(tmp_path: Path) -> None:
    from trl import SFTConfig

    from looper_cli.training import TrainOptions, trl_config

    args = trl_config(SFTConfig, TrainOptions(batch_size=3), tmp_path, "cpu", max_length=64)
    assert isinstance(args, SFTConfig) and args.per_device_train_batch_size == 3 and args.max_length == 64
    assert args.n_gpu == 0 and args.world_size == 1
