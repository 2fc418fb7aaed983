"""`looper pipeline`: the built-in default end to end on the tiny model (CPU),
skip-when-unchanged, redo-when-changed, and how stage configs are resolved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from looper_cli.errors import UserError
from looper_cli.pipeline import Pipeline, PipelineConfig, check_stages


def test_default_pipeline_runs_end_to_end_then_skips_what_is_done(cli, tmp_path: Path):
    result = cli("pipeline", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "default"
    for name in ("base/config.json", "sft/summary.json", "rollouts.jsonl", "bandit.json", "prefs.jsonl",
                 "rollouts.config.toml", "prefs.config.toml", "pipeline.summary.json"):
        assert (run / name).exists(), name
    summary = json.loads((run / "pipeline.summary.json").read_text())
    assert {"base", "sft"} <= set(summary["accuracy"])
    assert all(0.0 <= a <= 1.0 for a in summary["accuracy"].values())
    assert set(summary["pairs"]) == {"correctness", "coherence"}
    statuses = {s["stage"]: s["status"] for s in summary["stages"]}
    assert statuses["sft"] == statuses["rollout"] == statuses["prefs"] == "ran"
    assert statuses["dpo"] == "ran" or statuses["dpo"].startswith("skipped")
    if statuses["dpo"] == "ran":
        assert "dpo" in summary["accuracy"] and (run / "dpo" / "summary.json").is_file()
    assert "test accuracy" in result.stdout
    rollouts = (run / "rollouts.jsonl").read_text()

    # Unchanged config: every stage is skipped and nothing is rewritten.
    again = cli("pipeline", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((run / "pipeline.summary.json").read_text())
    assert {s["status"] for s in second["stages"]} <= {"cached"} | {s for s in statuses.values()
                                                                    if s.startswith("skipped")}
    assert (run / "rollouts.jsonl").read_text() == rollouts

    # A changed [prefs] table redoes prefs only; the old pairs are kept aside.
    config = tmp_path / "run.toml"
    config.write_text("[prefs]\nmax_per_question = 1\nkinds = ['correctness']\n")
    third = cli("pipeline", "--config", str(config), "--stages", "rollout,prefs", cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    stages = {s["stage"]: s["status"] for s in json.loads((run / "pipeline.summary.json").read_text())["stages"]}
    assert stages == {"rollout": "cached", "prefs": "ran"}
    assert (run / "prefs.jsonl.prev").exists()
    assert all(json.loads(line)["kind"] == "correctness" for line in (run / "prefs.jsonl").read_text().splitlines())


def test_stage_config_precedence(tmp_path: Path):
    from looper_cli.rollout import RolloutStageConfig

    config = tmp_path / "run.toml"
    config.write_text('data = "top.jsonl"\n[rollout]\nsamples = 2\ntemperature = 0.5\n')
    pipe = Pipeline(PipelineConfig(config=config, data="cli.jsonl"))  # tiny run: built-in options apply
    cfg = pipe.stage_config(RolloutStageConfig, "rollout", {"data": pipe.data},
                            {"output": tmp_path / "r.jsonl", "samples": 3})
    assert cfg.temperature == 0.5  # the TOML table beats the built-in default (0.7)
    assert cfg.max_new_tokens == 72  # built-in tiny default where the TOML says nothing
    assert cfg.data == "cli.jsonl"  # --data beats the TOML's top-level data
    assert cfg.samples == 3 and cfg.output == tmp_path / "r.jsonl"  # wiring always wins


def test_unknown_stage_is_a_user_error(cli, tmp_path: Path):
    with pytest.raises(UserError, match="unknown stage"):
        check_stages(["sft", "grpo"])
    assert check_stages(["eval", "sft"]) == ["sft", "eval"]
    result = cli("pipeline", "--stages", "sft,bogus", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
