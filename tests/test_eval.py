"""`looper eval` end to end on the tiny model: logs and summaries, K samples
with Regime W scores, resume after SIGKILL, recovery from damaged lines,
two checkpoints compared, Platinum's cleaning_status split, user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from looper_cli.jsonl import read_jsonl
from conftest import ROOT, run_cli

FAST = ["--max-new-tokens", "12", "--template", "chat", "--engine", "hf"]


def _ids(path: Path) -> list[str]:
    result = read_jsonl(path)
    assert not result.bad_lines
    return [r["question_id"] for r in result.rows]


@pytest.fixture(scope="module")
def sampled_eval(tiny_model, gsm8k_dir, tmp_path_factory):
    """One finished eval with K=3 samples, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("eval") / "tiny-gsm8k"
    proc = run_cli("eval", "--checkpoint", tiny_model, "--dataset", gsm8k_dir, "--limit", "6",
                   "--samples", "3", "--batch-size", "3", "--output", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_eval_writes_log_summary_and_table(sampled_eval):
    out, proc = sampled_eval
    summary = json.loads((out / "summary.json").read_text())
    for key in ("accuracy", "accuracy_strict", "accuracy_flexible", "n", "accuracy_ci", "maj_at_k",
                "vote_at_k", "pass_at_k", "mean_tokens", "k"):
        assert key in summary, key
    assert summary["n"] == 6 and summary["k"] == 3
    assert 0 <= summary["accuracy"] <= 1 and summary["mean_tokens"] <= 12
    rows = read_jsonl(out / "examples.jsonl").rows
    assert len(rows) == 6 and len({r["question_id"] for r in rows}) == 6
    row = rows[0]
    for key in ("prompt", "completion", "answer", "answer_strict", "answer_flexible", "gold",
                "correct", "correct_strict", "correct_flexible", "tokens", "maj_answer", "vote_answer",
                "maj_correct", "vote_correct", "pass_at_k"):
        assert key in row, key
    assert len(row["samples"]) == 3
    for sample in row["samples"]:
        assert 0 <= sample["s_wm"] <= 1 and sample["arm"][0] in "WM"
    assert (out / "config.toml").is_file()
    assert "accuracy" in proc.stdout and "Regime W vote@3" in proc.stdout


def test_finished_eval_reruns_without_work_and_refuses_other_options(sampled_eval, tiny_model, gsm8k_dir, cli):
    out, _ = sampled_eval
    before = (out / "examples.jsonl").read_bytes()
    same = cli("eval", "--checkpoint", tiny_model, "--dataset", gsm8k_dir, "--limit", "6", "--samples", "3",
               "--batch-size", "3", "--output", out, *FAST)
    assert same.returncode == 0, same.stderr
    assert json.loads((out / "summary.json").read_text())["evaluated_now"] == 0
    other = cli("eval", "--checkpoint", tiny_model, "--dataset", gsm8k_dir, "--limit", "6", "--samples", "2",
                "--output", out, *FAST)
    assert other.returncode == 2 and "different samples" in other.stderr  # never mixed into the log
    assert (out / "examples.jsonl").read_bytes() == before


def test_damaged_lines_are_recovered_and_reevaluated(sampled_eval, tiny_model, gsm8k_dir, tmp_path):
    import shutil

    from looper_cli.evaluate import EvalStageConfig, run_eval

    out = tmp_path / "copy"
    shutil.copytree(sampled_eval[0], out)
    log = out / "examples.jsonl"
    original = {r["question_id"]: r for r in read_jsonl(log).rows}
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + b"\x00garbage\n"  # a corrupted middle line
    lines[-1] = lines[-1][:-20]  # a last line cut by a kill
    log.write_bytes(b"".join(lines))
    cfg = EvalStageConfig(checkpoint=[str(tiny_model)], dataset=str(gsm8k_dir), limit=6, samples=3,
                          batch_size=3, max_new_tokens=12, engine="hf", output=out)
    summary = run_eval(cfg)
    assert summary["recovered_lines"] == 2 and summary["evaluated_now"] == 2
    assert summary["n"] == 6
    ids = _ids(log)
    assert sorted(ids) == sorted(original) and len(ids) == 6
    redone = {r["question_id"]: r for r in read_jsonl(log).rows}
    for qid, row in original.items():  # greedy is deterministic: same completions again
        assert redone[qid]["completion"] == row["completion"]


def test_resume_after_sigkill(tiny_model, gsm8k_dir, tmp_path, cli):
    out = tmp_path / "killed"
    log = out / "examples.jsonl"
    args = ["eval", "--checkpoint", tiny_model, "--dataset", gsm8k_dir, "--limit", "21",
            "--batch-size", "3", "--output", out, "--max-new-tokens", "24", "--engine", "hf"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "looper_cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_bytes().count(b"\n") >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "eval finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written_before = len(read_jsonl(log).rows)
    assert 6 <= written_before < 21
    rerun = cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    ids = _ids(log)
    assert len(ids) == 21 and len(set(ids)) == 21  # each question exactly once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 21 and summary["evaluated_now"] == 21 - written_before


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_two_checkpoints_are_compared(tiny_model, gsm8k_dir, tmp_path):
    from looper_cli.evaluate import EvalStageConfig, run_evals

    adapter = _zero_lora_adapter(tiny_model, tmp_path / "sft")
    out = tmp_path / "evals"
    cfg = EvalStageConfig(checkpoint=[str(tiny_model), str(adapter)], dataset=str(gsm8k_dir), limit=4,
                          max_new_tokens=12, engine="hf", output=out, bootstrap=500)
    result = run_evals(cfg)
    assert [s["n"] for s in result["runs"]] == [4, 4]
    comparison = json.loads((out / "compare.json").read_text())[0]
    assert comparison == result["comparisons"][0] and comparison["n"] == 4
    # A LoRA adapter fresh from init (B = 0) is the base model: no discordant pairs.
    assert comparison["only_a_correct"] == comparison["only_b_correct"] == 0
    assert comparison["mcnemar_exact_p"] == 1.0
    assert (out / "sft-gsm8k" / "summary.json").is_file()
    assert (out / f"{tiny_model.name}-gsm8k" / "summary.json").is_file()


def _zero_lora_adapter(base: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def test_platinum_cleaning_status_split(tiny_model, platinum_dir, tmp_path):
    from looper_cli.evaluate import EvalStageConfig, run_eval

    rows = [json.loads(line) for line in (platinum_dir / "test.jsonl").read_text().splitlines()]
    picked = [r for r in rows if r["cleaning_status"] == "consensus"][:2]
    picked += [r for r in rows if r["cleaning_status"] == "verified"][:2]
    picked += [r for r in rows if r["cleaning_status"] == "revised"][:1]
    data = tmp_path / "platinum_sample.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in picked))
    cfg = EvalStageConfig(checkpoint=[str(tiny_model)], dataset=str(data), max_new_tokens=8,
                          engine="hf", output=tmp_path / "out")
    summary = run_eval(cfg)
    split = summary["by_cleaning_status"]
    assert {k: v["n"] for k, v in split.items()} == {"consensus": 2, "verified": 2, "revised": 1}
    assert {r["cleaning_status"] for r in read_jsonl(tmp_path / "out" / "examples.jsonl").rows} == set(split)


def test_user_errors_are_one_line(tiny_model, tmp_path, cli):
    cases = [
        ["eval", "--checkpoint", tmp_path / "missing", "--dataset", "synthetic:3"],
        ["eval", "--checkpoint", tiny_model, "--dataset", tmp_path / "nope.jsonl"],
        ["eval", "--dataset", "synthetic:3"],
        ["eval", "--checkpoint", tiny_model, "--dataset", "synthetic:3", "--samples", "-1"],
        ["report", tmp_path],
    ]
    for args in cases:
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("looper: error:"), proc.stderr
