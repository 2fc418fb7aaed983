"""Evaluation on GSM8K / GSM8K-Platinum: greedy accuracy (strict, flexible
and the headline), optional K sampled completions with maj@K, Regime W
weighted vote@K and pass@K, and a per-example log that survives kills.

Headline `accuracy`: the answer the product's extractor reads in `auto`
mode — `#### N` or another answer marker (`The answer is`, `\\boxed{}`, ...)
when the model wrote one, else the last number. `accuracy_strict` counts
only `#### N` (lm-eval's strict-match); `accuracy_flexible` only the last
number (lm-eval's flexible-extract).

The log `examples.jsonl` is appended per question as chunks finish; a rerun
skips question ids already logged, and a damaged line (a kill mid-write or a
corrupted byte) is counted, dropped by an atomic rewrite, and evaluated again.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

from looper_cli.errors import UserError, require_at_least, require_counts, require_sampling

SECTION = "eval"
EXAMPLES_NAME = "examples.jsonl"
SUMMARY_NAME = "summary.json"
COMPARE_NAME = "compare.json"
DEFAULT_OUTPUT_ROOT = Path("outputs") / "eval"
REQUIRED_ROW_KEYS = ("question_id", "completion", "correct", "correct_strict", "correct_flexible")
# Extractor modes and the suffix of their fields in the log ("answer", "answer_strict", ...).
EXTRACT_MODES: tuple[tuple[Literal["auto", "strict", "flexible"], str], ...] = (
    ("auto", ""), ("strict", "_strict"), ("flexible", "_flexible"))
# Options that change what a logged row means: a resumed eval must match them.
IDENTITY_KEYS = ("checkpoint", "base_model", "dataset", "split", "samples", "temperature", "top_p",
                 "max_new_tokens", "template", "seed", "bandit")
SAMPLING_ONLY_KEYS = ("temperature", "top_p", "seed", "bandit")  # no effect on a greedy-only eval


@dataclass
class EvalStageConfig:
    checkpoint: list[str] = field(default_factory=list)  # adapter folder, model folder, hub id or .gguf
    base_model: Optional[str] = None  # overrides the base an adapter names
    dataset: str = "gsm8k"  # gsm8k | gsm8k-platinum | a .jsonl file or folder
    split: str = "test"
    limit: Optional[int] = None
    bare_answers: bool = False  # accept answers without '#### N' (read as that line)
    samples: int = 0  # K sampled completions per question, besides the greedy one
    temperature: float = 0.8  # of the K samples (the headline completion is greedy)
    top_p: float = 1.0
    max_new_tokens: int = 512
    batch_size: int = 256  # sequences in flight, as in rollout (the engine's max_seqs)
    gpu_memory_utilization: float = 0.9  # share of the GPU the eval may fill (weights + KV cache)
    kv_cache_gib: Optional[float] = None  # an explicit KV cache size
    output: Optional[Path] = None
    engine: Literal["auto", "hf", "fast"] = "auto"
    template: Optional[Literal["chat", "plain"]] = None  # None: the checkpoint's (its config.toml), else chat
    bandit: Optional[str] = None  # bandit.json, or a run folder holding one
    seed: int = 0
    compare_seed: int = 0
    bootstrap: int = 10000


# ---------------------------------------------------------------- entry points


def run_evals(cfg: EvalStageConfig) -> dict[str, Any]:
    """Evaluate every checkpoint; with two or more, compare each later one
    against the first on the shared questions (written to compare.json)."""
    checkpoints = _checkpoints(cfg)
    _check_options(cfg)
    if len(checkpoints) == 1:
        return {"runs": [run_eval(cfg)], "comparisons": []}
    from looper_cli.models import ModelSource

    for ckpt in checkpoints:  # a typo in the last one fails before the first is evaluated
        ModelSource.parse(ckpt)
    root = Path(cfg.output) if cfg.output is not None else DEFAULT_OUTPUT_ROOT
    labels = _unique_labels(checkpoints)
    summaries = [run_eval(dataclasses.replace(cfg, checkpoint=[ckpt],
                                              output=root / f"{label}-{dataset_label(cfg.dataset)}"))
                 for ckpt, label in zip(checkpoints, labels)]
    from looper_cli.compare import compare_eval_dirs
    from looper_cli.jsonl import atomic_write_json

    comparisons = [compare_eval_dirs(summaries[0]["output"], s["output"], n_boot=cfg.bootstrap,
                                     seed=cfg.compare_seed) for s in summaries[1:]]
    atomic_write_json(root / COMPARE_NAME, comparisons)
    return {"runs": summaries, "comparisons": comparisons}


def run_eval(cfg: EvalStageConfig) -> dict[str, Any]:
    """Evaluate one checkpoint; returns the summary (also summary.json)."""
    from looper_cli.locks import claim_output

    checkpoints = _checkpoints(cfg)
    if len(checkpoints) != 1:
        raise UserError("run_eval takes one checkpoint; use run_evals for several")
    _check_options(cfg)
    cfg = _with_absolute_paths(cfg)
    out_dir = eval_output_dir(cfg)
    with claim_output(out_dir, SECTION, folder=True):
        return _eval_into(cfg, out_dir)


def _eval_into(cfg: EvalStageConfig, out_dir: Path) -> dict[str, Any]:
    from looper_cli.config import save_resolved
    from looper_cli.data import load_problems
    from looper_cli.jsonl import JsonlAppender, atomic_write_json

    bandit = _bandit_path(cfg) if cfg.samples > 1 else None  # a bad --bandit fails before any work
    problems = load_problems(cfg.dataset, split=cfg.split, limit=cfg.limit, seed=cfg.seed,
                             bare_answers=cfg.bare_answers)
    _check_resumable(cfg, out_dir)
    save_resolved(cfg, SECTION, out_dir)
    log = out_dir / EXAMPLES_NAME
    done, recovered = load_log(log, REQUIRED_ROW_KEYS + (("samples",) if cfg.samples else ()))
    pending = [p for p in problems if p.id not in done]
    started = time.time()
    engine_stats: dict[str, Any] = {}
    if pending:
        with JsonlAppender(log) as appender:
            def keep(row: dict[str, Any]) -> None:
                appender.write(row)
                done[row["question_id"]] = row

            engine_stats = _evaluate(cfg, pending, len(problems) - len(pending), keep)
    rows = [done[p.id] for p in problems]
    summary = summarise(rows, cfg.samples)
    summary["engine"] = engine_stats
    summary.update(_run_fields(cfg, out_dir, recovered, evaluated_now=len(pending),
                               seconds=time.time() - started))
    if cfg.samples > 1:
        summary["bandit"] = str(bandit) if bandit else "fresh (no bandit.json given or beside the checkpoint)"
    atomic_write_json(out_dir / SUMMARY_NAME, summary)
    return summary


# ---------------------------------------------------------------- options and folders


def _checkpoints(cfg: EvalStageConfig) -> list[str]:
    value = cfg.checkpoint
    checkpoints = [value] if isinstance(value, (str, Path)) else [str(c) for c in value or []]
    if not checkpoints:
        raise UserError("eval needs --checkpoint (an adapter or model folder, a hub id or a .gguf file)")
    return [str(c) for c in checkpoints]


def _check_options(cfg: EvalStageConfig) -> None:
    require_at_least("--samples", cfg.samples, 0)
    require_counts({"--max-new-tokens": cfg.max_new_tokens, "--batch-size": cfg.batch_size, "--limit": cfg.limit,
                    "bootstrap": cfg.bootstrap})
    require_sampling(cfg.temperature, cfg.top_p)
    from looper_cli.engine import engine_config

    engine_config(cfg, group_size=cfg.samples + 1)  # the memory options
    if cfg.samples and cfg.temperature <= 0:
        raise UserError("--samples needs --temperature > 0 (K greedy samples would be identical)")


def _with_absolute_paths(cfg: EvalStageConfig) -> EvalStageConfig:
    """Local paths made absolute, so a resume from another folder still
    recognises the same eval; the template resolved (by default, the one the
    checkpoint was trained with)."""
    from looper_cli.models import ModelSource, absolute_if_local
    from looper_cli.prompts import resolve_template

    ckpt = _checkpoints(cfg)[0]
    ModelSource.parse(ckpt)  # a missing path fails here, before any data or model loads
    return dataclasses.replace(cfg, checkpoint=[absolute_if_local(ckpt)],
                               dataset=absolute_if_local(cfg.dataset),
                               bandit=absolute_if_local(cfg.bandit) if cfg.bandit else None,
                               template=resolve_template(cfg.template, ckpt))



def checkpoint_label(checkpoint: str) -> str:
    path = Path(checkpoint)
    return path.stem if checkpoint.endswith(".gguf") else (path.name or "model")


def dataset_label(dataset: str) -> str:
    """A short folder-friendly name: gsm8k, gsm8k-platinum, a folder's name, synthetic."""
    path = Path(str(dataset).split(":", 1)[0])  # synthetic:N -> synthetic
    if path.suffix == ".jsonl":
        return path.stem if path.stem not in ("test", "train", "validation") else path.parent.name
    return path.name or str(dataset)


def _unique_labels(checkpoints: Sequence[str]) -> list[str]:
    labels: list[str] = []
    for ckpt in checkpoints:
        label = checkpoint_label(ckpt)
        labels.append(label if label not in labels else f"{label}-{len(labels) + 1}")
    return labels


def eval_output_dir(cfg: EvalStageConfig) -> Path:
    if cfg.output is not None:
        return Path(cfg.output)
    label = f"{checkpoint_label(_checkpoints(cfg)[0])}-{dataset_label(cfg.dataset)}"
    return DEFAULT_OUTPUT_ROOT / label


def _check_resumable(cfg: EvalStageConfig, out_dir: Path) -> None:
    """A folder holding an eval made with other options is never mixed into."""
    from looper_cli.config import RESOLVED_CONFIG_NAME, as_dict, changed_keys, load_toml

    saved_path = out_dir / RESOLVED_CONFIG_NAME
    if not saved_path.is_file() or not (out_dir / EXAMPLES_NAME).exists():
        return
    saved = load_toml(saved_path).get(SECTION, {})
    current = as_dict(cfg)
    greedy_only = not saved.get("samples") and not current.get("samples")
    keys = [k for k in IDENTITY_KEYS if not (greedy_only and k in SAMPLING_ONLY_KEYS)]
    changed = changed_keys(saved, current, keys)
    if changed:
        raise UserError(f"{out_dir} holds an eval made with different {', '.join(changed)}; "
                        f"use another --output or delete that folder")


# ---------------------------------------------------------------- the log


def load_log(path: Path, required: Sequence[str]) -> tuple[dict[str, dict[str, Any]], int]:
    """Rows of an earlier (maybe killed) run by question id, and how many
    damaged or repeated lines were dropped. The file is rewritten atomically
    without them, so appending continues from clean rows only."""
    from looper_cli.jsonl import atomic_write_jsonl, read_jsonl

    result = read_jsonl(path, required=required)
    done: dict[str, dict[str, Any]] = {}
    for row in result.rows:
        done.setdefault(str(row["question_id"]), row)
    dropped = len(result.bad_lines) + len(result.rows) - len(done)
    if dropped:
        atomic_write_jsonl(path, done.values())
        from looper_cli.progress import console

        console.print(f"[yellow]recovered {dropped} damaged line(s) in {path}: "
                      f"those questions are evaluated again")
    return done, dropped


# ---------------------------------------------------------------- generation


def _evaluate(cfg: EvalStageConfig, problems: list[Any], already_done: int,
              keep: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Generate every problem's greedy completion (and its K samples) in one
    engine run, handing each finished question's row to `keep` as soon as
    its group ends. Returns the engine's figures."""
    from looper_cli.engine import SamplingConfig, engine_config, make_generator
    from looper_cli.progress import make_progress
    from looper_cli.scoring import load_bandit

    model, tokenizer = _load(cfg)
    generator = make_generator(model, tokenizer, cfg.engine, engine_config(cfg, group_size=cfg.samples + 1))
    prompts = [_prompt(tokenizer, p.question, cfg.template) for p in problems]
    # One group per question: the greedy completion (the headline answer)
    # first, then the K samples, so the prompt is prefilled once for all.
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                              samples=cfg.samples, seed=cfg.seed, plus_greedy=True)
    bandit = load_bandit(_bandit_path(cfg), seed=cfg.seed) if cfg.samples > 1 else None
    with make_progress() as progress:
        task = progress.add_task("eval", total=len(problems) + already_done, completed=already_done)

        def finished(index: int, group: list[Any]) -> None:
            problem, (first, samples) = problems[index], (group[0], group[1:])
            extra = _sample_fields([problem], [samples], bandit)[0] if samples else {}
            keep({**example_row(problem, prompts[index], first.text, first.tokens, first.finished), **extra})
            progress.advance(task)

        generator.generate(prompts, sampling, finished)
    return generator.stats.as_dict()


def _load(cfg: EvalStageConfig) -> tuple[Any, Any]:
    from looper_cli.models import load_model, load_tokenizer, resolve_checkpoint
    from looper_cli.training import has_tokenizer, quiet_hf_logging

    quiet_hf_logging()
    base, adapter = resolve_checkpoint(_checkpoints(cfg)[0], cfg.base_model)
    # An adapter folder carries the tokenizer it was trained with (chat template included).
    tokenizer_source = adapter if adapter is not None and has_tokenizer(adapter) else base
    tokenizer = load_tokenizer(tokenizer_source, padding_side="left")
    model = load_model(base, adapter)
    model.eval()
    if adapter is not None:
        model = model.merge_and_unload()  # plain weights generate faster than a LoRA wrapper
    return model, tokenizer


def _prompt(tokenizer: Any, question: str, template: Optional[str]) -> str:
    from looper_cli.prompts import build_prompt

    try:
        return build_prompt(tokenizer, question, template)  # type: ignore[arg-type]
    except ValueError as err:
        raise UserError(str(err)) from None


def _bandit_path(cfg: EvalStageConfig) -> Path | None:
    """--bandit (a file or a run folder), else the bandit.json of the run the
    checkpoint belongs to (runs/<name>/sft -> runs/<name>/bandit.json)."""
    from looper_cli.scoring import BANDIT_STATE_NAME

    if cfg.bandit:
        path = Path(cfg.bandit)
        path = path / BANDIT_STATE_NAME if path.is_dir() else path
        if not path.is_file():
            raise UserError(f"bandit state not found: {path}")
        return path
    beside = Path(_checkpoints(cfg)[0]).parent / BANDIT_STATE_NAME
    return beside if beside.is_file() else None


# ---------------------------------------------------------------- judging


def answer_text(completion: str) -> str:
    """The part of a completion that holds the answer: what follows the last
    `</think>`; nothing when a `<think>` block never closed (the model ran
    out of tokens while thinking). The stored completion keeps its thoughts."""
    if "</think>" in completion:
        return completion.rsplit("</think>", 1)[1]
    if "<think>" in completion:
        return completion.split("<think>", 1)[0]
    return completion


def judge(completion: str, gold: float | None) -> dict[str, Any]:
    """Answers under the three extraction modes and whether each is right."""
    from regime_w_core import extract_answer

    text = answer_text(completion)
    fields: dict[str, Any] = {}
    for mode, suffix in EXTRACT_MODES:
        found = extract_answer(text, mode)
        value = None if found is None else float(found.value)
        fields[f"answer{suffix}"] = value
        fields[f"correct{suffix}"] = _is_correct(value, gold)
    return fields


def example_row(problem: Any, prompt: str, completion: str, tokens: int, finished: bool) -> dict[str, Any]:
    """One line of examples.jsonl for the greedy completion."""
    return {
        "question_id": problem.id, "question": problem.question, "prompt": prompt, "gold": problem.gold,
        "completion": completion, "tokens": tokens, "finished": finished,
        **judge(completion, problem.gold), **problem.meta,
    }


def _sample_fields(problems: list[Any], groups: list[list[Any]], bandit: Any) -> list[dict[str, Any]]:
    """Per question: the K samples (answers, correctness, and with K > 1
    their Regime W scores), maj@K, Regime-W-vote@K and pass@K."""
    scored = None
    if bandit is not None:
        from looper_cli.scoring import score_groups

        scored = score_groups([[c.text for c in g] for g in groups], [[c.tokens for c in g] for g in groups],
                              bandit, golds=[p.gold for p in problems],
                              questions=[p.question for p in problems], learn=False)
    out = []
    for g, (problem, group) in enumerate(zip(problems, groups)):
        samples = []
        for j, completion in enumerate(group):
            verdict = judge(completion.text, problem.gold)
            sample = {"completion": completion.text, "tokens": completion.tokens,
                      "answer": verdict["answer"], "correct": verdict["correct"]}
            if scored is not None:
                row = scored.row_fields(int(scored.offsets[g]) + j)
                sample.update({k: row[k] for k in ("s_end", "s_path", "s_cf", "s_wm", "arm")})
            samples.append(sample)
        out.append(_votes(samples, problem.gold))
    return out


def _votes(samples: list[dict[str, Any]], gold: float | None) -> dict[str, Any]:
    answers = [s["answer"] for s in samples]
    fields: dict[str, Any] = {"samples": samples,
                              "pass_at_k": None if gold is None else any(s["correct"] for s in samples)}
    fields["maj_answer"] = weighted_vote(answers, [1.0] * len(answers))
    if all("s_wm" in s for s in samples) and len(samples) > 1:
        fields["vote_answer"] = weighted_vote(answers, [s["s_wm"] for s in samples])
    for key in ("maj", "vote"):
        if f"{key}_answer" in fields:
            fields[f"{key}_correct"] = _is_correct(fields[f"{key}_answer"], gold)
    return fields


def _is_correct(value: float | None, gold: float | None) -> bool | None:
    """None when the gold is unknown: such a row is never counted as wrong."""
    from regime_w_core import answers_equal

    if gold is None:
        return None
    return bool(value is not None and answers_equal(value, gold))


def weighted_vote(answers: Sequence[float | None], weights: Sequence[float]) -> float | None:
    """The answer whose cluster (answers equal under Regime W's tolerance)
    has the largest total weight; ties go to the cluster seen first. With
    unit weights this is majority voting; with s_wm, Regime W's vote."""
    from regime_w_core import answers_equal

    clusters: list[list[Any]] = []  # [representative answer, total weight]
    for answer, weight in zip(answers, weights):
        if answer is None:
            continue
        home = next((c for c in clusters if answers_equal(c[0], answer)), None)
        if home is None:
            clusters.append([answer, float(weight)])
        else:
            home[1] += float(weight)
    if not clusters:
        return None
    best = max(range(len(clusters)), key=lambda i: (clusters[i][1], -i))
    return clusters[best][0]


# ---------------------------------------------------------------- summary


def summarise(rows: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    """Accuracies with Wilson 95% CIs, sample metrics, lengths, and the split
    by Platinum's cleaning_status when the data has one."""
    summary = _accuracies(rows)
    summary["k"] = samples
    if samples:
        for key, field_name in (("maj_at_k", "maj_correct"), ("vote_at_k", "vote_correct"),
                                ("pass_at_k", "pass_at_k")):
            values = [r[field_name] for r in rows if r.get(field_name) is not None]
            if values:
                summary[key] = sum(map(bool, values)) / len(values)
        sample_tokens = [s["tokens"] for r in rows for s in r.get("samples", [])]
        summary["mean_tokens_samples"] = sum(sample_tokens) / len(sample_tokens) if sample_tokens else 0.0
    summary["mean_tokens"] = sum(r["tokens"] for r in rows) / len(rows) if rows else 0.0
    summary["truncated"] = sum(1 for r in rows if not r.get("finished", True))
    statuses = sorted({r["cleaning_status"] for r in rows if r.get("cleaning_status")})
    if statuses:
        summary["by_cleaning_status"] = {
            s: _accuracies([r for r in rows if r.get("cleaning_status") == s]) for s in statuses}
    return summary


def _accuracies(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from looper_cli.compare import wilson_interval

    out: dict[str, Any] = {"n": len(rows)}
    for key, field_name in (("accuracy", "correct"), ("accuracy_strict", "correct_strict"),
                            ("accuracy_flexible", "correct_flexible")):
        judged = [r[field_name] for r in rows if r.get(field_name) is not None]  # unknown gold: not a miss
        hits, n = sum(map(bool, judged)), len(judged)
        out[key] = hits / n if n else 0.0
        out[f"{key}_ci"] = list(wilson_interval(hits, n))
    return out


def _run_fields(cfg: EvalStageConfig, out_dir: Path, recovered: int, evaluated_now: int,
                seconds: float) -> dict[str, Any]:
    return {
        "checkpoint": _checkpoints(cfg)[0], "base_model": cfg.base_model, "dataset": cfg.dataset,
        "split": cfg.split, "temperature": cfg.temperature if cfg.samples else None,
        "max_new_tokens": cfg.max_new_tokens, "template": cfg.template, "output": str(out_dir),
        "recovered_lines": recovered, "evaluated_now": evaluated_now, "seconds": round(seconds, 2),
    }


def render_summary(summary: dict[str, Any]) -> Any:
    """A Rich table of one eval summary."""
    from rich.table import Table

    table = Table(title=f"eval {checkpoint_label(summary['checkpoint'])} on "
                        f"{dataset_label(summary['dataset'])} ({summary['n']} questions)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("accuracy (auto: marker, else last number)", _pct(summary, "accuracy"))
    table.add_row("accuracy strict (#### N)", _pct(summary, "accuracy_strict"))
    table.add_row("accuracy flexible (last number)", _pct(summary, "accuracy_flexible"))
    k = summary.get("k", 0)
    for key, name in (("maj_at_k", "maj"), ("vote_at_k", "Regime W vote"), ("pass_at_k", "pass")):
        if key in summary:
            table.add_row(f"{name}@{k}", f"{100 * summary[key]:.1f}%")
    table.add_row("mean tokens (greedy)", f"{summary['mean_tokens']:.1f}")
    if summary.get("truncated"):
        table.add_row("hit max_new_tokens", str(summary["truncated"]))
    for status, part in summary.get("by_cleaning_status", {}).items():
        table.add_row(f"  {status} ({part['n']})", _pct(part, "accuracy"))
    if summary.get("recovered_lines"):
        table.add_row("recovered damaged lines", str(summary["recovered_lines"]))
    return table


def _pct(summary: dict[str, Any], key: str) -> str:
    lo, hi = summary[f"{key}_ci"]
    return f"{100 * summary[key]:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
