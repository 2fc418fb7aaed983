"""The foundation every stage stands on: config merging, crash-safe JSONL,
data loading with stable ids, prompts, model loading errors, the CLI shell."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from looper_cli.config import resolve, save_resolved
from looper_cli.errors import UserError
from looper_cli.jsonl import JsonlAppender, atomic_write_jsonl, read_jsonl

from conftest import ROOT, run_cli


@dataclass
class _Cfg:
    lr: float = 1e-4
    steps: int = 10
    name: str = "x"
    full: bool = False
    targets: list[str] = field(default_factory=lambda: ["q_proj"])
    out: Path = Path("out")


def test_config_precedence_defaults_file_cli(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('name = "top"\n[sft]\nlr = 0.5\nsteps = 3\ntargets = ["a", "b"]\n')
    cfg = resolve(_Cfg, "sft", toml, steps=7, full=None)
    assert (cfg.lr, cfg.steps, cfg.name, cfg.targets, cfg.full) == (0.5, 7, "top", ["a", "b"], False)


def test_config_rejects_unknown_keys_and_bad_types(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("[sft]\nlearning_rat = 0.5\n")
    with pytest.raises(UserError, match="learning_rat"):
        resolve(_Cfg, "sft", toml)
    toml.write_text('[sft]\nsteps = "many"\n')
    with pytest.raises(UserError, match="steps"):
        resolve(_Cfg, "sft", toml)
    with pytest.raises(UserError, match="not found"):
        resolve(_Cfg, "sft", tmp_path / "missing.toml")


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = resolve(_Cfg, "sft", None, lr=0.25, out=tmp_path)
    written = save_resolved(cfg, "sft", tmp_path)
    assert resolve(_Cfg, "sft", written) == cfg


def test_jsonl_counts_damaged_lines_and_appender_cuts_partial_tail(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with JsonlAppender(path) as out:
        out.write_many([{"i": 0}, {"i": 1}, {"i": 2}])
    lines = path.read_text().splitlines()
    lines[1] = '{"i": 1, "trunc'
    path.write_text("\n".join(lines) + "\n" + '{"i": 3}')  # a middle line corrupted, the last cut
    result = read_jsonl(path, required=("i",))
    assert [r["i"] for r in result.rows] == [0, 2]
    assert result.bad_lines == [2, 4]
    with JsonlAppender(path) as out:
        out.write({"i": 4})
    assert [r["i"] for r in read_jsonl(path).rows] == [0, 2, 4]


def test_atomic_write_leaves_no_temporary(tmp_path: Path) -> None:
    assert atomic_write_jsonl(tmp_path / "a.jsonl", [{"x": 1}]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]


def test_gsm8k_loads_with_stable_ids_and_gold(gsm8k_dir: Path, platinum_dir: Path) -> None:
    from looper_cli.data import load_problems, question_id

    train = load_problems(gsm8k_dir, split="train")
    assert len(train) == 7473
    assert len({p.id for p in train}) == len(train)
    first = json.loads((gsm8k_dir / "train.jsonl").read_text().splitlines()[0])
    assert train[0].id == question_id(first["question"])
    assert train[0].gold == float(first["answer"].split("####")[-1].replace(",", ""))
    assert all(p.gold is not None for p in train)
    test = {p.id for p in load_problems(gsm8k_dir, split="test")}
    platinum = load_problems(platinum_dir, split="test")
    assert len(platinum) == 1209
    assert {p.meta["cleaning_status"] for p in platinum} == {"consensus", "verified", "revised"}
    # Platinum re-labels GSM8K test: the same questions keep the same ids.
    assert sum(p.id in test for p in platinum) >= 1190


def test_split_slices_leave_a_held_out_part(gsm8k_dir: Path) -> None:
    from looper_cli.data import load_problems

    train = load_problems(gsm8k_dir, split="train")
    kept = load_problems(gsm8k_dir, split="train[:-500]")
    held_out = load_problems(gsm8k_dir, split="train[-500:]")
    assert [p.id for p in kept + held_out] == [p.id for p in train]
    assert len(held_out) == 500 and not {p.id for p in kept} & {p.id for p in held_out}
    assert len(load_problems(gsm8k_dir, split="train[:10%]")) == round(len(train) / 10)
    assert [p.id for p in load_problems(gsm8k_dir, split="train[-500:]", limit=3)] == [p.id for p in held_out[:3]]
    for bad in ("train[5]", "train[a:b]", "train[:-500", "tr ain"):
        with pytest.raises(UserError, match="is not a split"):
            load_problems(gsm8k_dir, split=bad)
    with pytest.raises(UserError, match=r"no problems .*train\[7473:\]"):
        load_problems(gsm8k_dir, split="train[7473:]")


def test_data_errors_are_user_errors(tmp_path: Path) -> None:
    from looper_cli.data import load_problems

    with pytest.raises(UserError, match="not found"):
        load_problems(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(UserError, match="malformed"):
        load_problems(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="no problems"):
        load_problems(empty)


def test_synthetic_problems_are_seeded_and_exact() -> None:
    from looper_cli.data import load_problems

    a = load_problems("synthetic:50", split="train", seed=3)
    b = load_problems("synthetic:50", split="train", seed=3)
    test = load_problems("synthetic:50", split="test", seed=3)
    assert [p.question for p in a] == [p.question for p in b]
    assert not {p.question for p in a} & {p.question for p in test}
    for p in a:
        last_claim = p.answer.splitlines()[-2]
        assert float(last_claim.rstrip(".").split(">>")[-1]) == p.gold


def test_prompts_chat_and_plain(tiny_model: Path) -> None:
    from looper_cli.models import load_tokenizer
    from looper_cli.prompts import SYSTEM_PROMPT, build_prompt

    tok = load_tokenizer(tiny_model)
    chat = build_prompt(tok, "What is 2+2?")
    assert SYSTEM_PROMPT in chat and chat.rstrip().endswith("<|assistant|>")
    assert build_prompt(tok, " What is 2+2? ", "plain") == "Question: What is 2+2?\nAnswer:"


def test_model_sources_and_errors(tiny_model: Path, tmp_path: Path) -> None:
    from looper_cli.models import ModelSource, load_model, resolve_checkpoint

    assert ModelSource.parse("GAIR/Abel-7B-002").path_or_id == "GAIR/Abel-7B-002"
    gguf = tmp_path / "m.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    assert ModelSource.parse(gguf).kwargs() == {"gguf_file": "m.Q4_1.gguf"}
    for bad in (tmp_path / "missing", "./nope", tmp_path / "missing.gguf"):
        with pytest.raises(UserError):
            ModelSource.parse(bad)
    model = load_model(tiny_model)
    assert next(model.parameters()).dtype.is_floating_point and model.device.type == "cpu"
    assert resolve_checkpoint(tiny_model) == (str(tiny_model), None)


def test_help_imports_no_heavy_libraries() -> None:
    code = ("import sys; sys.argv=['looper','--help']\n"
            "from looper_cli.cli import main\n"
            "try: main()\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch','transformers','trl','peft','datasets') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-500:]


def test_version_and_user_errors_exit_2(tmp_path: Path) -> None:
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("looper ")
    bad_path = run_cli("tiny", str(tmp_path / "t"), "--data", str(tmp_path / "typo.jsonl"))
    assert bad_path.returncode == 2
    assert bad_path.stderr.strip().count("\n") == 0 and "not found" in bad_path.stderr
    assert "Traceback" not in bad_path.stderr
    bad_option = run_cli("tiny", str(tmp_path / "t"), "--no-such-option")
    assert bad_option.returncode == 2 and "Traceback" not in bad_option.stderr
