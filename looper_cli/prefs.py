"""Preference pairs from scored rollouts, as REGIME_W.md's "Preference pairs"
section defines them, in the format TRL's DPOTrainer reads.

- correctness: in a group with correct and incorrect solutions, a correct one
  (highest reward first) over an incorrect one (lowest reward first);
- coherence: among the correct solutions, the one with the higher s_wm over
  the lower when the gap exceeds the threshold (largest gap first).

Caps: `max_per_question` per kind and question, `max_pairs` in total (taken
round-robin over questions, so the cap spreads instead of keeping the first
questions only). No duplicate pairs, no pair of identical texts.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from looper_cli.errors import UserError, require_at_least

SECTION = "prefs"
KINDS = ("correctness", "coherence")


@dataclass
class PrefsStageConfig:
    rollouts: Path = Path("runs/default/rollouts.jsonl")
    output: Optional[Path] = None  # default: prefs.jsonl next to the rollouts
    coherence_threshold: float = 0.01
    max_per_question: int = 4  # per kind
    max_pairs: Optional[int] = None
    kinds: list[str] | None = None  # default: both kinds


def output_path(cfg: PrefsStageConfig) -> Path:
    return Path(cfg.output) if cfg.output else Path(cfg.rollouts).with_name("prefs.jsonl")


def run_prefs(cfg: PrefsStageConfig) -> dict[str, Any]:
    """Build the pairs, write them atomically, print and save the summary."""
    from looper_cli.locks import claim_output

    kinds = check_config(cfg)
    with claim_output(output_path(cfg), SECTION, folder=False):
        return _write_pairs(cfg, kinds)


def _write_pairs(cfg: PrefsStageConfig, kinds: tuple[str, ...]) -> dict[str, Any]:
    from looper_cli.config import save_resolved
    from looper_cli.errors import require_file
    from looper_cli.jsonl import atomic_write_json, atomic_write_jsonl, read_jsonl, require_field_types
    from looper_cli.rollout import ROW_TYPES, group_by_question

    src = require_file(cfg.rollouts, "rollouts file")
    result = read_jsonl(src, required=("question_id", "text"))
    require_field_types(result, src, ROW_TYPES)
    rows = result.rows
    if not rows:
        raise UserError(f"no rollout rows in {src}")
    if any("s_wm" not in r or "reward" not in r for r in rows):
        raise UserError(f"{src} is not scored (no s_wm/reward); run `looper score {src}` first")
    pairs = build_pairs(group_by_question(rows), kinds, cfg.coherence_threshold,
                        cfg.max_per_question, cfg.max_pairs)
    out = output_path(cfg)
    atomic_write_jsonl(out, pairs)
    save_resolved(cfg, SECTION, out.parent, name=out.stem + ".config.toml")
    summary = {"stage": SECTION, "output": str(out), "questions": len({r["question_id"] for r in rows}),
               "pairs": len(pairs), **pair_statistics(pairs)}
    atomic_write_json(out.with_name(out.stem + ".summary.json"), summary)
    print_prefs_summary(summary)
    return summary


def check_config(cfg: PrefsStageConfig) -> tuple[str, ...]:
    kinds = tuple(cfg.kinds) if cfg.kinds else KINDS
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UserError(f"unknown pair kind(s): {', '.join(unknown)} (choose from {', '.join(KINDS)})")
    require_at_least("--max-per-question", cfg.max_per_question, 1)
    require_at_least("--max-pairs", cfg.max_pairs, 0)
    require_at_least("--coherence-threshold", cfg.coherence_threshold, 0)
    return kinds


def build_pairs(groups: list[list[dict[str, Any]]], kinds: tuple[str, ...] = KINDS,
                threshold: float = 0.01, max_per_question: int = 4,
                max_pairs: Optional[int] = None) -> list[dict[str, Any]]:
    """All pairs of all groups, best first within each question, then the
    total cap taken round-robin over questions (rank 0 of every question,
    then rank 1, ...)."""
    seen: set[tuple[str, str, str]] = set()
    per_question = []
    for group in groups:
        pairs: list[dict[str, Any]] = []
        if "correctness" in kinds:
            pairs += _take(correctness_candidates(group), max_per_question, seen, "correctness")
        if "coherence" in kinds:
            pairs += _take(coherence_candidates(group, threshold), max_per_question, seen, "coherence")
        per_question.append(pairs)
    ranked = sorted(((rank, q, pair) for q, pairs in enumerate(per_question) for rank, pair in enumerate(pairs)),
                    key=lambda t: (t[0], t[1]))
    chosen = ranked if max_pairs is None else ranked[:max_pairs]
    return [pair for _, _, pair in sorted(chosen, key=lambda t: (t[1], t[0]))]  # back in file order


def correctness_candidates(group: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """(correct, incorrect) pairs: chosen by reward high to low, rejected by
    reward low to high, walked along anti-diagonals so the first pairs use
    different solutions instead of one chosen against every rejected."""
    correct = sorted((r for r in group if r.get("correct") is True), key=lambda r: -r["reward"])
    wrong = sorted((r for r in group if r.get("correct") is False), key=lambda r: r["reward"])
    cells = sorted(((i, j) for i in range(len(correct)) for j in range(len(wrong))),
                   key=lambda ij: (ij[0] + ij[1], ij[0]))
    return [(correct[i], wrong[j]) for i, j in cells]


def coherence_candidates(group: list[dict[str, Any]], threshold: float) -> list[tuple[dict, dict]]:
    """(higher s_wm, lower s_wm) among correct solutions, gap > threshold,
    largest gap first."""
    correct = [r for r in group if r.get("correct") is True]
    pairs = [(a, b) for a in correct for b in correct if a["s_wm"] - b["s_wm"] > threshold]
    return sorted(pairs, key=lambda ab: -(ab[0]["s_wm"] - ab[1]["s_wm"]))


def _take(candidates: list[tuple[dict, dict]], cap: int, seen: set[tuple[str, str, str]],
          kind: str) -> list[dict[str, Any]]:
    """Up to `cap` pairs, skipping identical texts and pairs already taken."""
    taken: list[dict[str, Any]] = []
    for chosen, rejected in candidates:
        if len(taken) >= cap:
            break
        key = (chosen.get("prompt", chosen.get("question", "")), chosen["text"], rejected["text"])
        if chosen["text"].strip() == rejected["text"].strip() or key in seen:
            continue
        seen.add(key)
        taken.append(pair_row(chosen, rejected, kind))
    return taken


def pair_row(chosen: dict[str, Any], rejected: dict[str, Any], kind: str) -> dict[str, Any]:
    """One DPO row; the score is what ranked the pair (reward or s_wm)."""
    score = "reward" if kind == "correctness" else "s_wm"
    return {
        "prompt": chosen.get("prompt") or chosen.get("question", ""),
        "chosen": chosen["text"], "rejected": rejected["text"], "kind": kind,
        "question_id": chosen["question_id"],
        "chosen_score": float(chosen[score]), "rejected_score": float(rejected[score]),
        "chosen_tokens": int(chosen.get("tokens", 0)), "rejected_tokens": int(rejected.get("tokens", 0)),
    }


def pair_statistics(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by kind and chosen-vs-rejected lengths: DPO learns length when
    chosen solutions are systematically longer (or shorter)."""
    stats: dict[str, Any] = {f"pairs_{k}": sum(p["kind"] == k for p in pairs) for k in KINDS}
    if pairs:
        chosen = [p["chosen_tokens"] for p in pairs]
        rejected = [p["rejected_tokens"] for p in pairs]
        stats.update({
            "chosen_tokens_mean": statistics.fmean(chosen), "rejected_tokens_mean": statistics.fmean(rejected),
            "chosen_tokens_median": statistics.median(chosen),
            "rejected_tokens_median": statistics.median(rejected),
            "chosen_longer_share": sum(c > r for c, r in zip(chosen, rejected)) / len(pairs),
        })
    return stats


def print_prefs_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    counts = Table(title="looper prefs: pairs by kind")
    counts.add_column("kind")
    counts.add_column("pairs", justify="right")
    for kind in KINDS:
        counts.add_row(kind, str(summary.get(f"pairs_{kind}", 0)))
    counts.add_row("total", str(summary["pairs"]), style="bold")
    console.print(counts)
    if summary["pairs"]:
        lengths = Table(title="length (tokens): chosen vs rejected")
        for col in ("", "chosen", "rejected"):
            lengths.add_column(col, justify="right")
        for stat in ("mean", "median"):
            lengths.add_row(stat, f"{summary[f'chosen_tokens_{stat}']:.1f}",
                            f"{summary[f'rejected_tokens_{stat}']:.1f}")
        console.print(lengths)
        console.print(f"chosen is longer in {summary['chosen_longer_share']:.0%} of pairs "
                      "(far from 50% means DPO can learn length instead of reasoning)")
    console.print(f"written to {summary['output']}")
