"""looper dpo on the tiny model: the reference is the SFT adapter (step-0
rewards are exactly zero although SFT moved away from the base), the policy
trains and is saved as one adapter, the loss variants run, and bad inputs
give one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BETA = 0.1


@pytest.fixture(scope="module")
def sft_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter trained hard enough to differ clearly from the base."""
    from looper_cli.sft import SFTStageConfig, run_sft

    out = tmp_path_factory.mktemp("dpo-sft") / "sft"
    run_sft(SFTStageConfig(base_model=str(tiny_model), data="synthetic:32", output=out, max_steps=6,
                           batch_size=4, lr=1e-2, max_length=192, lora_r=8, save_steps=100))
    return out


@pytest.fixture(scope="module")
def prefs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pairs in the `looper prefs` schema: the reference solution over one
    with a wrong final answer."""
    from looper_cli.data import load_problems
    from looper_cli.jsonl import atomic_write_jsonl
    from looper_cli.models import load_tokenizer
    from looper_cli.prompts import build_prompt

    tok = load_tokenizer(tiny_model)
    rows = [{"prompt": build_prompt(tok, p.question), "chosen": p.answer,
             "rejected": p.answer.rsplit("####", 1)[0] + f"#### {int(p.gold or 0) + 7}",
             "kind": "correctness", "question_id": p.id, "chosen_score": 1.0, "rejected_score": 0.0}
            for p in load_problems("synthetic:16")]
    path = tmp_path_factory.mktemp("prefs") / "prefs.jsonl"
    atomic_write_jsonl(path, rows)
    return path


def _sequence_logp(model, tok, prompt: str, completion: str) -> float:
    import torch

    p = tok(prompt, add_special_tokens=False).input_ids
    c = tok(completion, add_special_tokens=False).input_ids
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logps = model(ids).logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logps[len(p) - 1:].sum())


def test_dpo_reference_is_the_sft_adapter_and_policy_trains(tiny_model: Path, sft_adapter: Path,
                                                              prefs: Path, tmp_path: Path, cli) -> None:
    from looper_cli.config import to_toml
    from looper_cli.models import load_model, load_tokenizer

    pair = json.loads(prefs.read_text().splitlines()[0])
    tok = load_tokenizer(tiny_model)
    base_logp = _sequence_logp(load_model(str(tiny_model), device="cpu"), tok, pair["prompt"], pair["chosen"])
    sft_model = load_model(str(tiny_model), adapter=sft_adapter, device="cpu")
    sft_logp = _sequence_logp(sft_model, tok, pair["prompt"], pair["chosen"])
    assert abs(sft_logp - base_logp) > 1.0  # a base-model reference would show up as non-zero rewards

    config = tmp_path / "run.toml"
    config.write_text(to_toml({"dpo": {"logging_steps": 1, "max_steps": 4, "lr": 5e-3, "batch_size": 4,
                                       "max_length": 256, "beta": BETA, "save_steps": 100}}))
    out = tmp_path / "dpo"
    result = cli("dpo", "--sft", sft_adapter, "--prefs", prefs, "-o", out, "--config", config)
    assert result.returncode == 0, result.stderr[-2000:]

    history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    first = history[0]
    assert first["step"] == 1
    # Step 0: policy == reference (the SFT adapter), so every implicit reward is 0.
    assert abs(first["rewards/chosen"]) < 1e-4 and abs(first["rewards/rejected"]) < 1e-4
    assert first["loss"] == pytest.approx(0.6931, abs=1e-3)  # -log sigmoid(0)
    assert abs(history[-2]["rewards/chosen"]) > 1e-4  # after updates the policy has left the reference

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["loss_type"] == "sigmoid" and summary["pairs"] == 16
    saved = json.loads((out / "adapter_config.json").read_text())
    assert not (out / "ref").exists() and saved["base_model_name_or_path"] == str(tiny_model)
    dpo_model = load_model(str(tiny_model), adapter=out, device="cpu")
    assert _sequence_logp(dpo_model, tok, pair["prompt"], pair["chosen"]) != pytest.approx(sft_logp, abs=1e-4)


def test_dpo_rpo_with_length_normalisation(sft_adapter: Path, prefs: Path, tmp_path: Path) -> None:
    from looper_cli.dpo import DPOStageConfig, run_dpo

    summary = run_dpo(DPOStageConfig(sft=sft_adapter, prefs=prefs, output=tmp_path / "rpo", loss="rpo",
                                     rpo_alpha=0.5, length_normalize=True, max_steps=1, batch_size=4,
                                     max_length=256, save_steps=100))
    assert summary["loss_type"] == "sigmoid_norm+sft" and summary["steps"] == 1
    assert summary["final_loss"] > 0.6931  # the NLL term adds to -log sigmoid(0)


def test_dpo_with_compiled_layers_matches_eager(sft_adapter: Path, prefs: Path, tmp_path: Path) -> None:
    """--compile on DPO, where the reference pass switches to the frozen `ref`
    adapter inside the same compiled layers: the first step's loss and the
    saved adapter match the eager run."""
    import torch
    from safetensors.torch import load_file

    from looper_cli.dpo import DPOStageConfig, run_dpo

    options = dict(sft=sft_adapter, prefs=prefs, max_steps=2, batch_size=4, max_length=256, save_steps=100,
                   logging_steps=1)
    eager = run_dpo(DPOStageConfig(output=tmp_path / "eager", **options))
    compiled = run_dpo(DPOStageConfig(output=tmp_path / "compiled", compile_layers=True, **options))
    assert compiled["compiled_layers"] == 2 and compiled["first_loss"] == pytest.approx(eager["first_loss"], abs=1e-4)
    a = load_file(str(tmp_path / "eager" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "compiled" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


@pytest.fixture(scope="module")
def other_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with another hidden size: adapters for tiny_model do not fit it."""
    from looper_cli.synthetic import synthetic_problems
    from looper_cli.tiny import TinyConfig, build_tiny_model

    texts = [r["question"] + "\n" + r["answer"] for r in synthetic_problems(60)]
    return build_tiny_model(tmp_path_factory.mktemp("other"), texts,
                            TinyConfig(hidden_size=32, intermediate_size=88))


@pytest.mark.parametrize("case", ["missing-pairs", "empty-pairs", "no-sft"])
def test_dpo_user_errors_are_one_line(case: str, sft_adapter: Path, prefs: Path, tmp_path: Path, cli) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = {
        "missing-pairs": ["--sft", sft_adapter, "--prefs", tmp_path / "nope.jsonl"],
        "empty-pairs": ["--sft", sft_adapter, "--prefs", empty],
        "no-sft": ["--prefs", prefs],
    }[case]
    result = cli("dpo", *args, "-o", tmp_path / "out", "--max-steps", "1")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("looper: error:"), result.stderr


def test_dpo_refuses_an_adapter_made_for_another_base(sft_adapter: Path, prefs: Path, tmp_path: Path) -> None:
    """A base with another hidden size: a UserError naming both models
    (the CLI turns it into one line, as above), not a shape traceback."""
    from looper_cli.dpo import DPOStageConfig, run_dpo
    from looper_cli.errors import UserError
    from looper_cli.synthetic import synthetic_problems
    from looper_cli.tiny import TinyConfig, build_tiny_model

    texts = [r["question"] + "\n" + r["answer"] for r in synthetic_problems(60)]
    other = build_tiny_model(tmp_path / "other", texts, TinyConfig(hidden_size=32, intermediate_size=88))
    with pytest.raises(UserError, match="does not fit base model") as err:
        run_dpo(DPOStageConfig(sft=sft_adapter, prefs=prefs, base_model=str(other), output=tmp_path / "out",
                               max_steps=1))
    assert "\n" not in str(err.value)
