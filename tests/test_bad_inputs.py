"""Issue 17, "no silent wrong results": every bad input the audit tried is
refused with one line and exit code 2 (or behaves as documented), no
command ever shows a traceback for one, and two writers never share an
output.

Most cases fail before any model loads, so the CLI matrix runs all of them
through the real `looper` entry point inside ONE interpreter
(`run_cli_batch`); the rest call the stages in-process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from looper_cli.errors import UserError
from looper_cli.jsonl import read_jsonl

from conftest import ROOT, run_cli, run_cli_batch

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter from one step of `sft --template plain` on tiny_model."""
    from looper_cli.sft import SFTStageConfig, run_sft

    out = tmp_path_factory.mktemp("adapter") / "sft"
    run_sft(SFTStageConfig(base_model=str(tiny_model), data="synthetic:8", output=out, max_steps=1, batch_size=4,
                           max_length=192, lora_r=4, save_steps=100, template="plain"))
    return out


def _tiny_model(folder: Path, problems: int, problem_seed: int, **shape: int) -> Path:
    from looper_cli.synthetic import synthetic_problems
    from looper_cli.tiny import TinyConfig, build_tiny_model

    rows = synthetic_problems(problems, seed=problem_seed)
    return build_tiny_model(folder, [r["question"] + "\n" + r["answer"] for r in rows], TinyConfig(**shape))


@pytest.fixture(scope="module")
def twin_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model's shape and tokenizer (the same problems), other random weights."""
    return _tiny_model(tmp_path_factory.mktemp("twin"), 300, 0, seed=7)


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another vocabulary and hidden size."""
    return _tiny_model(tmp_path_factory.mktemp("other"), 60, 1, hidden_size=32, intermediate_size=88)


def _gsm8k_rows(gsm8k_dir: Path, n: int) -> list[dict]:
    return [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:n]]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def bad_data(gsm8k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """GSM8K test rows broken the ways the audit broke them."""
    folder = tmp_path_factory.mktemp("bad-data")
    rows = _gsm8k_rows(gsm8k_dir, 5)
    bare = [{**r, "answer": r["answer"].split("####")[-1].strip()} for r in rows]
    return {
        "bare": _write_jsonl(folder / "bare.jsonl", bare),
        "null_question": _write_jsonl(folder / "null_q.jsonl", [rows[0], {**rows[1], "question": None}]),
        "number_answer": _write_jsonl(folder / "number_a.jsonl", [rows[0], {**rows[1], "answer": 18}]),
        "huge_question": _write_jsonl(folder / "huge.jsonl", [rows[0], {**rows[1], "question": "x" * 10_000_000}]),
    }


def _scored_groups(n_groups: int, offset: int = 0) -> list[dict]:
    """Rollout rows whose groups mix right and wrong answers: each one teaches the bandit."""
    rows = []
    for q in range(offset, offset + n_groups):
        a, b = 3 + q, 4 + q
        texts = [f"{a}*{b} = <<{a}*{b}={a * b}>>{a * b}\n#### {a * b}", f"{a}*{b} = {a * b + 1}\n#### {a * b + 1}",
                 f"#### {a * b}", "I am not sure.\n#### 7"]
        rows += [{"question_id": f"q{q}", "question": f"{a} bags of {b} apples: how many apples?",
                  "gold": float(a * b), "sample_index": k, "text": t, "tokens": len(t.split())}
                 for k, t in enumerate(texts)]
    return rows


def _fake_eval(folder: Path, outcomes: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _write_jsonl(folder / "examples.jsonl", [{"question_id": f"q{i}", "correct": bool(c), "correct_strict": bool(c),
                                              "correct_flexible": bool(c)} for i, c in enumerate(outcomes)])
    return folder


# ----------------------------------------------------------------------------- the CLI matrix


def _cli_cases(tmp: Path, tiny: Path, adapter: Path, twin: Path, other: Path, data: dict[str, Path]) -> dict:
    """id -> (argv, what the one-line message must say). Every case must exit 2."""
    (tmp / "a-file").write_text("not a folder")
    (tmp / "a-folder").mkdir(exist_ok=True)
    (tmp / "typo-table.toml").write_text('[sfft]\nlr = 0.1\n')
    (tmp / "typo-key.toml").write_text('base_modle = "m"\n[sft]\nlr = 0.1\n')
    rollouts = _write_jsonl(tmp / "rollouts.jsonl", _scored_groups(2))
    (tmp / "damaged.jsonl").write_text(rollouts.read_text() + "garbage\n")
    _write_jsonl(tmp / "bad-tokens.jsonl", [{**_scored_groups(1)[0], "tokens": "many"}])
    ev = _fake_eval(tmp / "eval-a", [1, 0, 1])
    sft_base = ["sft", "--base-model", tiny, "--data", "synthetic:8"]
    sft = [*sft_base, "--max-steps", "1", "-o", tmp / "sft-out"]
    roll = ["rollout", "--base-model", tiny, "--data", "synthetic", "--output", tmp / "r.jsonl"]
    evl = ["eval", "--checkpoint", tiny, "--engine", "hf", "--max-new-tokens", "4", "--output", tmp / "ev"]
    return {
        # 1. a gold that cannot be read names the row; 8. wrong field types name line and field
        "eval-bare-gold": ([*evl, "--dataset", data["bare"], "--limit", "5"], "line 1: no gold answer"),
        "rollout-bare-gold": ([*roll[:4], data["bare"], "--output", tmp / "r.jsonl"], "--bare-answers"),
        "question-null": ([*evl, "--dataset", data["null_question"]], "line 2: field 'question' must be text"),
        "answer-number": ([*evl, "--dataset", data["number_answer"]], "line 2: field 'answer' must be text"),
        "score-tokens-text": (["score", tmp / "bad-tokens.jsonl"], "line 1: field 'tokens' must be a number"),
        # 3. adapter and base mismatch; tiny over an existing model
        "merge-twin-base": (["merge", "--adapter", adapter, "--base-model", twin, "--output", tmp / "m1"],
                            "same shape, other weights"),
        "merge-other-base": (["merge", "--adapter", adapter, "--base-model", other, "--output", tmp / "m2"],
                             "does not fit base model"),
        "rollout-other-base": (["rollout", "--base-model", other, "--adapter", adapter, "--data", "synthetic",
                                "--limit", "2", "--output", tmp / "r2.jsonl"], "does not fit base model"),
        "eval-other-base": (["eval", "--checkpoint", adapter, "--base-model", other, "--dataset", "synthetic:2",
                             "--engine", "hf", "--output", tmp / "ev2"], "does not fit base model"),
        "tiny-over-model": (["tiny", tiny], "pass --force"),
        # 4. numbers that used to run the wrong thing
        "rollout-limit-0": ([*roll, "--limit", "0"], "--limit must be 1 or more, not 0"),
        "rollout-limit-neg": ([*roll, "--limit", "-5"], "--limit must be 1 or more, not -5"),
        "rollout-temperature": ([*roll, "--temperature", "-0.5"], "--temperature must be 0 or more"),
        "rollout-batch-size": ([*roll, "--batch-size", "0"], "--batch-size must be 1 or more"),
        "rollout-gpus": ([*roll, "--gpus", "-1"], "--gpus must be 0 or more"),
        "eval-batch-size": ([*evl, "--dataset", "synthetic:2", "--batch-size", "0"], "--batch-size"),
        "eval-limit-0": ([*evl, "--dataset", "synthetic:2", "--limit", "0"], "--limit"),
        # the engine's options, before any model loads
        "rollout-memory-share": ([*roll, "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization must be"),
        "eval-kv-cache": ([*evl, "--dataset", "synthetic:2", "--kv-cache-gib", "0"], "--kv-cache-gib must be"),
        "sft-epochs-0": ([*sft_base, "--epochs", "0", "-o", tmp / "s0"], "--epochs must be above 0"),
        "sft-max-steps-0": ([*sft, "--max-steps", "0"], "--max-steps must be above 0"),
        "ppo-temperature": (["ppo", "--sft", adapter, "--data", "synthetic:8", "--temperature", "0", "-o",
                             tmp / "p0"], "--temperature"),
        "ppo-coherence-arm": (["ppo", "--sft", adapter, "--data", "synthetic:8", "--coherence-arm", "X9", "-o",
                               tmp / "p1"], "--coherence-arm must be one of W1, W2"),
        "ppo-shaping": (["ppo", "--sft", adapter, "--data", "synthetic:8", "--shaping", "wrong", "-o", tmp / "p2"],
                        "option shaping must be one of all, correct, not 'wrong'"),
        "dpo-beta": (["dpo", "--sft", adapter, "--prefs", rollouts, "--beta", "0", "-o", tmp / "d0"], "--beta"),
        # 6. score in place never drops rows silently
        "score-damaged-in-place": (["score", tmp / "damaged.jsonl"], "--drop-damaged"),
        # 7. config typos
        "config-table-typo": (["pipeline", "--config", tmp / "typo-table.toml"], "did you mean 'sft'"),
        "config-key-typo": (["sft", "--config", tmp / "typo-key.toml"], "did you mean 'base_model'"),
        # 9. what used to be a traceback
        "sft-grad-accum-0": ([*sft, "--grad-accum", "0"], "--grad-accum"),
        "sft-lr-negative": ([*sft, "--lr", "-1"], "--lr must be above 0"),
        "sft-batch-size-0": ([*sft, "--batch-size", "0"], "--batch-size"),
        "sft-lora-r-0": ([*sft, "--lora-r", "0"], "--lora-r"),
        "sft-max-length-5": ([*sft, "--max-length", "5"], "--max-length 5 leaves no room"),
        "sft-lora-targets-typo": ([*sft, "--lora-targets", "q_prj"], "--lora-targets q_prj: no such module"),
        "compare-bootstrap-0": (["compare", ev, ev, "--bootstrap", "0"], "--bootstrap"),
        "data-synthetic-abc": (["sft", "--base-model", tiny, "--data", "synthetic:abc", "-o", tmp / "s1"],
                               "synthetic:abc"),
        "sft-output-file": ([*sft[:-1], tmp / "a-file"], "is a file"),
        "eval-output-file": ([*evl[:-1], tmp / "a-file", "--dataset", "synthetic:2"], "is a file"),
        "merge-output-file": (["merge", "--adapter", adapter, "--output", tmp / "a-file"], "is a file"),
        "prefs-output-folder": (["prefs", rollouts, "--output", tmp / "a-folder"], "is a folder"),
        "huge-question": ([*evl, "--dataset", data["huge_question"]], "line 2: the question is 10,000,000"),
    }


@pytest.fixture(scope="module")
def cli_matrix(tiny_model, adapter, twin_model, other_model, bad_data, tmp_path_factory) -> dict[str, tuple]:
    tmp = tmp_path_factory.mktemp("matrix")
    cases = _cli_cases(tmp, tiny_model, adapter, twin_model, other_model, bad_data)
    results = run_cli_batch([argv for argv, _ in cases.values()], cwd=tmp)
    return {case: (expected, result) for (case, (_, expected)), result in zip(cases.items(), results)}


CASES = ["eval-bare-gold", "rollout-bare-gold", "question-null", "answer-number", "score-tokens-text",
         "merge-twin-base", "merge-other-base", "rollout-other-base", "eval-other-base", "tiny-over-model",
         "rollout-limit-0", "rollout-limit-neg", "rollout-temperature", "rollout-batch-size", "rollout-gpus",
         "eval-batch-size", "eval-limit-0", "rollout-memory-share", "eval-kv-cache", "sft-epochs-0", "sft-max-steps-0",
         "ppo-temperature",
         "ppo-coherence-arm", "ppo-shaping", "dpo-beta",
         "score-damaged-in-place", "config-table-typo", "config-key-typo", "sft-grad-accum-0", "sft-lr-negative",
         "sft-batch-size-0", "sft-lora-r-0", "sft-max-length-5", "sft-lora-targets-typo", "compare-bootstrap-0",
         "data-synthetic-abc", "sft-output-file", "eval-output-file", "merge-output-file", "prefs-output-folder",
         "huge-question"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case: str, cli_matrix) -> None:
    expected, result = cli_matrix[case]
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 2, result
    assert lines and lines[-1].startswith("looper: error:") and expected in lines[-1], result["stderr"]
    assert len([line for line in lines if not _is_progress_line(line)]) == 1, result["stderr"]


def test_no_bad_input_ever_shows_a_traceback(cli_matrix) -> None:
    """The whole fixed list of bad inputs, over every command: no traceback."""
    assert set(cli_matrix) == set(CASES)
    shown = [case for case, (_, result) in cli_matrix.items() if "Traceback" in result["stderr"]]
    assert not shown, {case: cli_matrix[case][1]["stderr"][-1500:] for case in shown}


def _is_progress_line(line: str) -> bool:
    return "━" in line or line.strip().startswith("rollout ")  # a bar that was live when the error came


# ----------------------------------------------------------------------------- 1. golds


def test_bare_answers_are_read_when_asked_and_no_gold_is_ever_null(tiny_model, bad_data, gsm8k_dir,
                                                                   tmp_path) -> None:
    from looper_cli.data import load_problems
    from looper_cli.evaluate import EvalStageConfig, run_eval

    golds = [p.gold for p in load_problems(bad_data["bare"], bare_answers=True)]
    assert golds == [p.gold for p in load_problems(gsm8k_dir, split="test", limit=5)]  # as from '#### N' 
    summary = run_eval(EvalStageConfig(checkpoint=[str(tiny_model)], dataset=str(bad_data["bare"]), limit=3,
                                       bare_answers=True, max_new_tokens=4, engine="hf", output=tmp_path / "ev"))
    rows = read_jsonl(tmp_path / "ev" / "examples.jsonl").rows
    order = [p.id for p in load_problems(bad_data["bare"], bare_answers=True)]
    rows.sort(key=lambda r: order.index(r["question_id"]))  # the log is in the order questions finish
    assert summary["n"] == 3 and [r["gold"] for r in rows] == golds[:3]
    assert all(r["gold"] is not None for r in rows)
    assert load_problems(bad_data["number_answer"], bare_answers=True)[1].gold == 18.0  # a JSON number too


def test_an_unknown_gold_is_never_scored_as_wrong() -> None:
    """Data loading refuses such rows; the judge and the summary keep to it
    for any row that has one anyway (a hand-edited log)."""
    from looper_cli.evaluate import judge, summarise

    assert judge("#### 5", None)["correct"] is None and judge("#### 5", 5.0)["correct"] is True
    right = {"question_id": "a", "tokens": 3, **judge("#### 5", 5.0)}
    unknown = {"question_id": "b", "tokens": 3, **judge("#### 5", None)}
    summary = summarise([right, unknown], samples=0)
    assert summary["accuracy"] == summary["accuracy_strict"] == 1.0  # 1 of 1 judged, not 1 of 2


# ----------------------------------------------------------------------------- 2. resume settings


def _fabricated_run(out: Path, section: str, recorded: object, finished: bool) -> None:
    """What a killed (or finished) run leaves: its recorded settings and a checkpoint."""
    from looper_cli.config import save_resolved

    save_resolved(recorded, section, out)
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    if finished:
        (out / "summary.json").write_text('{"stage": "%s", "steps": 2}' % section)


def test_resume_with_other_settings_is_refused_for_every_trainer(tiny_model, adapter, tmp_path) -> None:
    from looper_cli.dpo import DPOStageConfig, run_dpo
    from looper_cli.ppo import PPOStageConfig, run_ppo
    from looper_cli.sft import SFTStageConfig, run_sft

    prefs = _write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    stages = [
        ("sft", run_sft, SFTStageConfig(base_model=str(tiny_model), data="synthetic:8", max_steps=2, resume=True,
                                        template="chat"), {"lr": 0.5}),
        ("dpo", run_dpo, DPOStageConfig(sft=adapter, prefs=prefs, max_steps=2, resume=True, template="plain"),
         {"beta": 0.3}),
        ("ppo", run_ppo, PPOStageConfig(sft=adapter, data="synthetic:8", max_steps=2, resume=True,
                                        template="plain"), {"temperature": 0.5, "limit": 4}),
    ]
    for section, stage, cfg, changed in stages:
        for finished in (False, True):
            out = tmp_path / f"{section}-{finished}"
            cfg = dataclasses.replace(cfg, output=out)
            _fabricated_run(out, section, dataclasses.replace(cfg, **changed), finished)
            with pytest.raises(UserError, match="other settings") as err:
                stage(cfg)
            assert all(key in str(err.value) for key in changed), err.value
            assert ("finished" in str(err.value)) == finished
    # A finished run with the same settings is done: its summary back, nothing trained.
    out = tmp_path / "same"
    cfg = SFTStageConfig(base_model=str(tiny_model), data="synthetic:8", max_steps=2, output=out, template="chat")
    _fabricated_run(out, "sft", cfg, finished=True)
    assert run_sft(dataclasses.replace(cfg, resume=True)) == {"stage": "sft", "steps": 2}
    with pytest.raises(UserError, match="finished sft run"):
        run_sft(cfg)  # without --resume a finished run is never trained over


def test_a_damaged_last_checkpoint_is_named(tiny_model, tmp_path) -> None:
    from looper_cli.sft import SFTStageConfig, run_sft

    cfg = SFTStageConfig(base_model=str(tiny_model), data="synthetic:8", max_steps=2, output=tmp_path / "s",
                         template="chat")
    _fabricated_run(tmp_path / "s", "sft", cfg, finished=False)
    (tmp_path / "s" / "checkpoint-2" / "optimizer.pt").write_bytes(b"\x00 half a file")
    with pytest.raises(UserError, match="checkpoint-2 is damaged .optimizer.pt"):
        run_sft(dataclasses.replace(cfg, resume=True))


# ----------------------------------------------------------------------------- 3. adapters


def test_adapters_record_their_base_and_refuse_another(tiny_model, adapter, twin_model) -> None:
    from looper_cli.models import BASE_RECORD_NAME, load_model

    record = json.loads((adapter / BASE_RECORD_NAME).read_text())
    assert record["name"] == str(tiny_model) and record["shape"]["hidden_size"] == 64
    load_model(str(tiny_model), adapter, device="cpu")  # the base it was made for fits
    with pytest.raises(UserError, match="other weights"):
        load_model(str(twin_model), adapter, device="cpu")


# ----------------------------------------------------------------------------- 5. one writer per output


def test_two_writers_on_one_output_the_second_names_the_holder(tiny_model, adapter, tmp_path) -> None:
    """For every stage that writes: this test holds the output (as a first
    run would), the stage run through `looper` exits 2 naming it."""
    from looper_cli.locks import claim_output

    rollouts = _write_jsonl(tmp_path / "rollouts.jsonl", _scored_groups(2))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "bandit.json").write_text(__import__("regime_w_core").Bandit().to_json())
    held = {  # stage -> (argv, output it writes, is a folder)
        "sft": (["sft", "--base-model", tiny_model, "-o", tmp_path / "sft"], tmp_path / "sft", True),
        "dpo": (["dpo", "--sft", adapter, "--prefs", rollouts, "-o", tmp_path / "dpo"], tmp_path / "dpo", True),
        "ppo": (["ppo", "--sft", adapter, "-o", tmp_path / "ppo"], tmp_path / "ppo", True),
        "merge": (["merge", "--adapter", adapter, "--output", tmp_path / "merged"], tmp_path / "merged", True),
        "rollout": (["rollout", "--base-model", tiny_model, "--data", "synthetic", "--output", tmp_path / "r.jsonl"],
                    tmp_path / "r.jsonl", False),
        "score": (["score", rollouts], rollouts, False),
        "prefs": (["prefs", rollouts, "--output", tmp_path / "p.jsonl"], tmp_path / "p.jsonl", False),
        "eval": (["eval", "--checkpoint", tiny_model, "--dataset", "synthetic:2", "--output", tmp_path / "ev"],
                 tmp_path / "ev", True),
        "report": (["report", tmp_path / "run"], tmp_path / "run" / "report", True),
        "tiny": (["tiny", tmp_path / "tiny"], tmp_path / "tiny", True),
        "pipeline": (["pipeline", "--runs-dir", tmp_path, "--run", "pipe"], tmp_path / "pipe", True),
    }
    with contextlib.ExitStack() as stack:
        for stage, (_, output, folder) in held.items():
            stack.enter_context(claim_output(output, f"first-{stage}", folder=folder))
        results = run_cli_batch([argv for argv, _, _ in held.values()])
    for stage, result in zip(held, results):
        assert result["code"] == 2, (stage, result)
        assert f"pid {os.getpid()}" in result["stderr"] and "another run" in result["stderr"], (stage, result)


def test_two_evals_on_one_output_run_one_at_a_time(tiny_model, tmp_path) -> None:
    """Two real `looper eval` processes: the second stops at once, naming the
    first, which alone writes examples.jsonl."""
    out = tmp_path / "ev"
    args = ["eval", "--checkpoint", tiny_model, "--dataset", "synthetic:60", "--batch-size", "2", "--engine", "hf",
            "--max-new-tokens", "24", "--output", out]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "looper_cli", *map(str, args)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / "examples.jsonl").is_file():
            assert first.poll() is None and time.time() < deadline, "the first eval never started writing"
            time.sleep(0.05)
        second = run_cli(*args)
        assert first.poll() is None, "the first eval finished before the second started: give it more work"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stderr
    ids = [r["question_id"] for r in read_jsonl(out / "examples.jsonl").rows]
    assert len(ids) == len(set(ids))  # nothing written twice


# ----------------------------------------------------------------------------- 6. score


def test_rescoring_teaches_the_bandit_each_group_once(tmp_path) -> None:
    from looper_cli.rollout import score_rollouts_file

    src = _write_jsonl(tmp_path / "rollouts.jsonl", _scored_groups(5))
    updates = []
    for _ in range(3):
        score_rollouts_file(src)
        updates.append(json.loads((tmp_path / "bandit.json").read_text())["n_updates"])
    assert updates[0] == 5 and updates == [5, 5, 5]  # the same evidence is learned once
    assert all("s_wm" in r for r in read_jsonl(src).rows)  # yet every row is rescored
    more = _write_jsonl(tmp_path / "more.jsonl", _scored_groups(3, offset=5))
    assert score_rollouts_file(more)["bandit_new_groups"] == 3
    assert json.loads((tmp_path / "bandit.json").read_text())["n_updates"] == 8  # new groups still teach


def test_score_keeps_every_row_it_cannot_read(tmp_path) -> None:
    from looper_cli.rollout import score_rollouts_file

    rows = _scored_groups(2)
    src = tmp_path / "rollouts.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())  # a BOM is no damage
    assert score_rollouts_file(src, learn=False)["skipped_lines"] == 0 and len(read_jsonl(src).rows) == 8
    src.write_text(src.read_text() + "garbage\n")
    before = src.read_bytes()
    with pytest.raises(UserError, match="--drop-damaged"):
        score_rollouts_file(src, learn=False)
    assert src.read_bytes() == before
    assert score_rollouts_file(src, tmp_path / "out.jsonl", learn=False)["skipped_lines"] == 1
    assert src.read_bytes() == before  # --output leaves the input as it was
    score_rollouts_file(src, learn=False, drop_damaged=True)  # asked for: the line goes
    assert len(read_jsonl(src).rows) == 8 and not read_jsonl(src).bad_lines


# ----------------------------------------------------------------------------- 7, 8. config and data


def test_config_typos_and_wrong_types_are_named(tmp_path) -> None:
    from looper_cli.config import resolve
    from looper_cli.data import load_problems
    from looper_cli.dpo import load_pairs
    from looper_cli.sft import SFTStageConfig

    config = tmp_path / "run.toml"
    config.write_text('[sft]\nlr = 0.1\n[evall]\nlimit = 3\n')
    with pytest.raises(UserError, match=r"unknown table \[evall\].*did you mean 'eval'"):
        resolve(SFTStageConfig, "sft", config)
    config.write_text('datta = "gsm8k"\n')
    with pytest.raises(UserError, match="'datta'.*did you mean 'data'"):
        resolve(SFTStageConfig, "sft", config)
    config.write_bytes(b'\xef\xbb\xbf[sft]\nlr = 0.1\n')  # a BOM is fine
    assert resolve(SFTStageConfig, "sft", config).lr == 0.1
    data = _write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "#### 1"},
                                               {"question": ["q"], "answer": "x"}])
    with pytest.raises(UserError, match="d.jsonl line 2: field 'question' must be text, not a list"):
        load_problems(data)
    pairs = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": None, "rejected": "r"}])
    with pytest.raises(UserError, match="line 1: field 'chosen' must be text, not null"):
        load_pairs(pairs)
    for bad in ("synthetic:0", "synthetic:-3", "synthetic:"):
        with pytest.raises(UserError, match="whole number above 0"):
            load_problems(bad)


# ----------------------------------------------------------------------------- 9. disk full


def test_a_full_disk_is_one_line_and_keeps_the_input(tmp_path) -> None:
    """The write of the scored file meets ENOSPC (its temporary file is
    /dev/full): one line saying so, the input untouched, no half file left."""
    src = _write_jsonl(tmp_path / "rollouts.jsonl", _scored_groups(2))
    before = src.read_bytes()
    code = ("import os, sys\n"
            f"os.symlink('/dev/full', {str(tmp_path)!r} + f'/.scored.jsonl.tmp-{{os.getpid()}}')\n"
            f"os.execv(sys.executable, [sys.executable, '-m', 'looper_cli', 'score', {str(src)!r}, "
            f"'--output', {str(tmp_path / 'scored.jsonl')!r}])\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("looper: error: the disk is full") and "finished work is kept" in last
    assert src.read_bytes() == before and not (tmp_path / "scored.jsonl").exists()
    assert not list(tmp_path.glob(".scored.jsonl.tmp-*"))  # the temporary is cleaned up


# ----------------------------------------------------------------------------- 10. smaller things


def test_help_keeps_placeholders_and_formulas(tmp_path) -> None:
    helps = run_cli_batch([["eval", "--help"], ["ppo", "--help"], ["report", "--help"], ["score", "--help"],
                           ["compare", "--help"]])
    text = {h["argv"][0]: " ".join(h["stdout"].split()) for h in helps}
    assert all(h["code"] == 0 for h in helps)
    assert "outputs/eval/<checkpoint>-<dataset>" in text["eval"]
    assert "alpha * correct + beta * s_wm - gamma * length_penalty" in text["ppo"]
    assert "runs/<name>" in text["report"]
    assert "--config" in text["score"] and "--config" in text["compare"]


def test_score_and_compare_read_their_config(tmp_path) -> None:
    from looper_cli.config import to_toml

    src = _write_jsonl(tmp_path / "rollouts.jsonl", _scored_groups(2))
    a, b = _fake_eval(tmp_path / "a", [1, 0, 1, 0]), _fake_eval(tmp_path / "b", [1, 1, 1, 0])
    config = tmp_path / "run.toml"
    config.write_text(to_toml({"score": {"rollouts": str(src), "output": str(tmp_path / "s.jsonl"), "beta": 0.0},
                               "compare": {"eval_a": str(a), "eval_b": str(b), "bootstrap": 50,
                                           "output": str(tmp_path / "c.json")}}))
    results = run_cli_batch([["score", "--config", config], ["compare", "--config", config]])
    assert [r["code"] for r in results] == [0, 0], results
    assert len(read_jsonl(tmp_path / "s.jsonl").rows) == 8
    assert json.loads((tmp_path / "c.json").read_text())["bootstrap"]["samples"] == 50


def test_summaries_use_one_format(tmp_path, capsys) -> None:
    from looper_cli.progress import format_value
    from looper_cli.sft import SFTStageConfig
    from looper_cli.training import print_summary, stage_summary_fields

    assert format_value("accuracy", 0.005208) == "0.5%"  # as the pipeline table shows it
    assert stage_summary_fields(SFTStageConfig(base_model="m", full=False))["full"] is False
    print_summary({"stage": "merge", "steps": None, "final_loss": None, "peak_gpu_gib": None, "seconds": 1.5})
    shown = capsys.readouterr().out
    assert "None" not in shown and "1.5" in shown


def test_template_is_carried_from_the_adapter(tiny_model, adapter) -> None:
    from looper_cli.evaluate import EvalStageConfig, _with_absolute_paths
    from looper_cli.prompts import recorded_template, resolve_template

    assert recorded_template(adapter) == "plain" and recorded_template(tiny_model) is None
    assert _with_absolute_paths(EvalStageConfig(checkpoint=[str(adapter)])).template == "plain"
    assert _with_absolute_paths(EvalStageConfig(checkpoint=[str(adapter)], template="chat")).template == "chat"
    assert resolve_template(None, adapter, tiny_model) == "plain"  # rollout: --adapter, then --base-model
    assert resolve_template(None, None, tiny_model) == "chat"


def test_report_labels_bars_and_names_tied_arms(tmp_path) -> None:
    import regime_w_core as rw

    from looper_cli.compare import wilson_interval
    from looper_cli.report import _pyplot, accuracy_figure, make_report

    evals = [{"name": n, "accuracy": a, "accuracy_ci": list(wilson_interval(int(a * 40), 40))}
             for n, a in (("base-gsm8k", 0.0), ("sft-gsm8k", 0.25))]
    fig = accuracy_figure(_pyplot(), evals)
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.0%", "25.0%"]  # a 0% bar still shows its value
    run = tmp_path / "run"
    run.mkdir()
    (run / "bandit.json").write_text(rw.Bandit(seed=0).to_json())  # nothing learned: all eight arms tie
    make_report(run)
    assert "Best arms (tied posterior means): **W1**, **W2**" in (run / "report" / "report.md").read_text()


def test_bandit_refuses_absurd_sizes() -> None:
    """In a child with capped memory and a timeout: a core that tried the
    10**12 draws would fail this test in seconds instead of hanging it."""
    import resource

    code = ("import regime_w_core as rw\n"
            "b = rw.Bandit(seed=0)\n"
            "assert len(b.choose(5)) == 5\n"
            "try:\n    b.choose(10**12)\nexcept ValueError as err:\n    print('refused:', err)\n")
    cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # noqa: E731
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, preexec_fn=cap)
    assert proc.returncode == 0 and "refused: n_groups must be at most" in proc.stdout, proc.stderr[-1000:]
