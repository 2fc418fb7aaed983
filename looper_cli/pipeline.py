"""`looper pipeline`: sft -> rollout -> prefs -> dpo -> (ppo) -> eval in one
run folder (`runs/<name>/`, layout in docs/architecture.md).

Each stage's config is resolved from its defaults, the TOML file's
`[stage]` table (and top-level `run`, `base_model`, `data`) and the run
folder's wiring (where outputs go, which earlier output a stage reads). A
fingerprint of the config and of the upstream stages is stored next to each
output (`<stage>.fingerprint.json`): a stage whose output exists and whose
fingerprint is unchanged is skipped; a stage that was cut off resumes; a
stage whose config changed is redone (its old output is kept as `*.prev`).

With no base model the built-in default runs on CPU in about a minute: the
tiny model (looper_cli.tiny), synthetic problems, a short full fine-tune as
SFT, then rollouts, pairs, DPO and eval on the held-out synthetic test split.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from looper_cli.errors import UserError

SECTION = "pipeline"
STAGES = ("sft", "rollout", "prefs", "dpo", "ppo", "eval")
DEFAULT_STAGES = ("sft", "rollout", "prefs", "dpo", "eval")
POLICIES = ("base", "sft", "dpo", "ppo")  # what eval measures, in order
TINY_BASE = "base"  # runs/<name>/base: the tiny model of the built-in default

# The built-in default: sizes that finish on 2 CPU cores in about a minute
# (the TOML file's tables win over these). A random tiny model learns the
# solution format in that time, not arithmetic: expect accuracies near zero
# and a handful of pairs; the run shows every stage working, not a result.
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "sft": {"full": True, "max_steps": 120, "lr": 3e-3, "batch_size": 16, "limit": 600,
            "max_length": 192, "logging_steps": 10, "save_steps": 1000},
    "rollout": {"limit": 48, "samples": 4, "max_new_tokens": 72, "temperature": 0.7, "batch_size": 192},
    "prefs": {},
    "dpo": {"max_steps": 12, "batch_size": 8, "lr": 5e-4, "max_length": 192, "logging_steps": 4,
            "save_steps": 1000},
    "ppo": {"max_steps": 4, "num_generations": 4, "max_new_tokens": 64, "batch_size": 8, "limit": 32,
            "logging_steps": 2, "save_steps": 1000},
    "eval": {"limit": 48, "max_new_tokens": 72, "batch_size": 48, "bootstrap": 200},
}


@dataclass
class PipelineConfig:
    run: str = "default"
    base_model: Optional[str] = None  # none: build the tiny model (the built-in default run)
    data: Optional[str] = None  # training problems; default: synthetic (tiny run) or gsm8k
    eval_data: Optional[str] = None  # default: the [eval] table's dataset, else data (test split)
    stages: list[str] | None = None  # default: sft, rollout, prefs, dpo, eval
    runs_dir: Path = Path("runs")
    config: Optional[Path] = None  # the TOML file with [sft] [rollout] [prefs] [dpo] [ppo] [eval]


@dataclass
class StageRecord:
    name: str
    status: str  # ran | cached | skipped: <why>
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """One run: the folder, the stage tables, and the records of what ran."""

    def __init__(self, cfg: PipelineConfig):
        from looper_cli.config import load_toml

        self.cfg = cfg
        self.tables = load_toml(cfg.config)
        self.tiny = cfg.base_model is None
        self.dir = (Path(cfg.runs_dir) / cfg.run).resolve()
        self.data = cfg.data or ("synthetic" if self.tiny else "gsm8k")
        self.records: list[StageRecord] = []
        self.fingerprints: dict[str, str] = {}  # stage/policy -> fingerprint

    # ------------------------------------------------------------------ config

    def stage_config(self, cls: Any, section: str, soft: dict[str, Any], wiring: dict[str, Any]) -> Any:
        """defaults < built-in tiny options and `soft` wiring < TOML < hard `wiring`."""
        from looper_cli.config import resolve

        cfg = resolve(cls, section, self.cfg.config)
        table = self.tables.get(section, {})
        top = {k for k, v in self.tables.items() if not isinstance(v, dict)}
        fields = {f.name for f in dataclasses.fields(cls)}
        tiny = TINY_OPTIONS.get(section, {}) if self.tiny else {}
        preset = {k: v for k, v in tiny.items() if k not in table and k not in top}
        preset.update({k: v for k, v in soft.items() if k not in table})  # from the pipeline's own options
        preset = {k: v for k, v in preset.items() if k in fields}
        return dataclasses.replace(cfg, **preset, **{k: v for k, v in wiring.items() if k in fields})

    def fingerprint(self, cfg: Any, *upstream: str) -> str:
        from looper_cli.config import config_fingerprint

        text = config_fingerprint(cfg) + "|" + "|".join(self.fingerprints.get(u, u) for u in upstream)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    # ------------------------------------------------------------------ running a stage

    def run_stage(self, name: str, fingerprint: str, outputs: list[Path], done_marker: Path,
                  run: Callable[[], dict[str, Any]]) -> StageRecord:
        """Skip when done with the same fingerprint; resume when cut off with
        the same fingerprint; otherwise set old outputs aside and run."""
        from looper_cli.jsonl import atomic_write_json

        stamp = self.dir / f"{name}.fingerprint.json"
        previous = json.loads(stamp.read_text()) if stamp.is_file() else {}
        same = previous.get("fingerprint") == fingerprint
        if same and previous.get("status") == "done" and done_marker.exists():
            record = StageRecord(name, "cached", previous.get("seconds", 0.0), previous.get("summary", {}))
        else:
            if not same:
                _set_aside(outputs)
            atomic_write_json(stamp, {"fingerprint": fingerprint, "status": "running"})
            started = time.perf_counter()
            summary = run()
            _free_accelerator_memory()
            record = StageRecord(name, "ran", round(time.perf_counter() - started, 2), summary)
            atomic_write_json(stamp, {"fingerprint": fingerprint, "status": "done",
                                      "seconds": record.seconds, "summary": _jsonable(summary)})
        self.fingerprints[name] = fingerprint
        self.records.append(record)
        return record

    def skip(self, name: str, why: str) -> None:
        from looper_cli.progress import console

        console.print(f"[yellow]pipeline: {name} skipped: {why}[/yellow]")
        self.records.append(StageRecord(name, f"skipped: {why}"))


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run the stages in order; return (and save) the summary."""
    from looper_cli.config import save_resolved
    from looper_cli.jsonl import atomic_write_json

    from looper_cli.locks import claim_output

    stages = check_stages(cfg.stages)
    pipe = Pipeline(cfg)
    with claim_output(pipe.dir, SECTION, folder=True):  # one pipeline per run folder
        pipe.dir.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, SECTION, pipe.dir, name="pipeline.config.toml")
        started = time.perf_counter()
        base = prepare_base(pipe)
        policies: dict[str, str] = {"base": base}
        for stage in stages:
            STAGE_RUNNERS[stage](pipe, policies)
        summary = pipeline_summary(pipe, time.perf_counter() - started)
        atomic_write_json(pipe.dir / "pipeline.summary.json", summary)
    print_pipeline_summary(pipe, summary)
    return summary


def check_stages(stages: Optional[list[str]]) -> list[str]:
    chosen = [s.strip() for s in (stages or DEFAULT_STAGES) if s.strip()]
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise UserError(f"unknown stage(s): {', '.join(unknown)} (choose from {', '.join(STAGES)})")
    if not chosen:
        raise UserError("--stages names no stage")
    return [s for s in STAGES if s in chosen]  # always in pipeline order


def prepare_base(pipe: Pipeline) -> str:
    """The base model: the user's, or the tiny model built once into the run."""
    if not pipe.tiny:
        from looper_cli.models import ModelSource, absolute_if_local

        ModelSource.parse(pipe.cfg.base_model or "")
        pipe.fingerprints["base"] = str(pipe.cfg.base_model)
        return absolute_if_local(str(pipe.cfg.base_model))
    from looper_cli.data import load_problems
    from looper_cli.tiny import TinyConfig, build_tiny_model

    out = pipe.dir / TINY_BASE
    pipe.fingerprints["base"] = f"tiny:{dataclasses.asdict(TinyConfig())}:{pipe.data}"
    if not (out / "config.json").is_file():
        problems = load_problems(pipe.data, split="train", limit=500)
        build_tiny_model(out, [p.question + "\n" + p.answer for p in problems], TinyConfig())
    return str(out)


# ---------------------------------------------------------------------- stages


def run_sft_stage(pipe: Pipeline, policies: dict[str, str]) -> None:
    from looper_cli.sft import SFTStageConfig, run_sft

    out = pipe.dir / "sft"
    cfg = pipe.stage_config(SFTStageConfig, "sft", {"data": pipe.data},
                            {"base_model": policies["base"], "output": out, "run": pipe.cfg.run, "resume": True})
    fp = pipe.fingerprint(cfg, "base")
    pipe.run_stage("sft", fp, [out], out / "summary.json", lambda: _train("sft", cfg, run_sft, out))
    policies["sft"] = str(out)


def run_rollout_stage(pipe: Pipeline, policies: dict[str, str]) -> None:
    from looper_cli.models import resolve_checkpoint
    from looper_cli.rollout import RolloutStageConfig, run_rollout, shards_dir, summary_path

    policy = _latest_policy(pipe, policies, ("sft",))
    base, adapter = resolve_checkpoint(policies[policy])
    out = pipe.dir / "rollouts.jsonl"
    cfg = pipe.stage_config(RolloutStageConfig, "rollout", {"data": pipe.data},
                            {"base_model": base, "adapter": Path(adapter) if adapter else None, "output": out})
    fp = pipe.fingerprint(cfg, policy)
    pipe.run_stage("rollout", fp, [out, shards_dir(out), summary_path(out)], out, lambda: run_rollout(cfg))


def run_prefs_stage(pipe: Pipeline, policies: dict[str, str]) -> None:
    from looper_cli.prefs import PrefsStageConfig, run_prefs

    rollouts, out = pipe.dir / "rollouts.jsonl", pipe.dir / "prefs.jsonl"
    if not rollouts.is_file():
        raise UserError(f"the prefs stage needs {rollouts}: add rollout to --stages")
    cfg = pipe.stage_config(PrefsStageConfig, "prefs", {}, {"rollouts": rollouts, "output": out})
    pipe.run_stage("prefs", pipe.fingerprint(cfg, "rollout", _file_stamp(rollouts)), [out], out,
                   lambda: run_prefs(cfg))


def run_dpo_stage(pipe: Pipeline, policies: dict[str, str]) -> None:
    from looper_cli.dpo import DPOStageConfig, run_dpo

    prefs, out = pipe.dir / "prefs.jsonl", pipe.dir / "dpo"
    if "sft" not in policies and not (pipe.dir / "sft" / "summary.json").is_file():
        raise UserError("the dpo stage needs the sft stage's output: add sft to --stages")
    if not prefs.is_file():
        raise UserError(f"the dpo stage needs {prefs}: add prefs to --stages")
    if not prefs.read_text().strip():
        pipe.skip("dpo", "no preference pairs (every group was all correct or all wrong)")
        return
    cfg = pipe.stage_config(DPOStageConfig, "dpo", {},
                            {"sft": pipe.dir / "sft", "prefs": prefs, "output": out, "run": pipe.cfg.run,
                             "resume": True})
    fp = pipe.fingerprint(cfg, "sft", "prefs", _file_stamp(prefs))
    pipe.run_stage("dpo", fp, [out], out / "summary.json", lambda: _train("dpo", cfg, run_dpo, out))
    policies["dpo"] = str(out)


def run_ppo_stage(pipe: Pipeline, policies: dict[str, str]) -> None:
    from looper_cli.ppo import PPOStageConfig, run_ppo
    from looper_cli.scoring import BANDIT_STATE_NAME

    start = _latest_policy(pipe, policies, ("dpo", "sft"))
    if start == "base":
        raise UserError("the ppo stage starts from the sft or dpo output: add sft to --stages")
    out = pipe.dir / "ppo"
    bandit = pipe.dir / BANDIT_STATE_NAME
    cfg = pipe.stage_config(PPOStageConfig, "ppo", {"data": pipe.data},
                            {start: Path(policies[start]), "output": out, "run": pipe.cfg.run, "resume": True,
                             "bandit_state": bandit if bandit.is_file() else None})
    fp = pipe.fingerprint(cfg, start)
    pipe.run_stage("ppo", fp, [out], out / "summary.json", lambda: _train("ppo", cfg, run_ppo, out))
    policies["ppo"] = str(out)


def run_eval_stage(pipe: Pipeline, policies: dict[str, str]) -> None:
    """Evaluate every policy the run has, on the same held-out questions."""
    from looper_cli.evaluate import EvalStageConfig, dataset_label, run_eval

    for name in POLICIES[1:]:
        _latest_policy(pipe, policies, (name,))  # also those finished by an earlier invocation
    for policy in POLICIES:
        if policy not in policies:
            continue
        soft = {"dataset": pipe.cfg.eval_data or pipe.data}
        cfg = pipe.stage_config(EvalStageConfig, "eval", soft, {"checkpoint": [policies[policy]]})
        out = pipe.dir / "eval" / f"{policy}-{dataset_label(cfg.dataset)}"
        cfg = dataclasses.replace(cfg, output=out)
        pipe.run_stage(f"eval-{policy}", pipe.fingerprint(cfg, policy), [out], out / "summary.json",
                       functools.partial(run_eval, cfg))


STAGE_RUNNERS: dict[str, Callable[[Pipeline, dict[str, str]], None]] = {
    "sft": run_sft_stage, "rollout": run_rollout_stage, "prefs": run_prefs_stage,
    "dpo": run_dpo_stage, "ppo": run_ppo_stage, "eval": run_eval_stage,
}


def _latest_policy(pipe: Pipeline, policies: dict[str, str], order: tuple[str, ...]) -> str:
    """The newest policy among `order` this run has (in this invocation or
    finished earlier on disk), else the base model."""
    for name in order:
        folder = pipe.dir / name
        if name in policies or (folder / "summary.json").is_file():
            policies.setdefault(name, str(folder))
            if name not in pipe.fingerprints:
                stamp = pipe.dir / f"{name}.fingerprint.json"
                pipe.fingerprints[name] = json.loads(stamp.read_text()).get("fingerprint", name) \
                    if stamp.is_file() else name
            return name
    return "base"


def _train(section: str, cfg: Any, stage: Callable[[Any], dict[str, Any]], out: Path) -> dict[str, Any]:
    """In this process, or for --gpus N > 1 through `looper <stage> --config`
    (that command relaunches under accelerate, one process per GPU)."""
    if not (getattr(cfg, "gpus", None) or 0) > 1:
        return stage(cfg)
    from looper_cli.config import save_resolved

    config_file = save_resolved(cfg, section, out.parent, name=f"{section}.pipeline.toml")
    result = subprocess.run([sys.executable, "-m", "looper_cli", section, "--config", str(config_file)])
    if result.returncode != 0:
        raise UserError(f"the {section} stage failed (exit code {result.returncode}); rerun the pipeline to resume")
    return json.loads((out / "summary.json").read_text())


def _free_accelerator_memory() -> None:
    """The next stage (rollout workers, the next trainer) needs the GPU memory
    the finished stage's model and optimizer held."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _set_aside(paths: list[Path]) -> None:
    """Outputs of an older config are kept as `<name>.prev` (one generation),
    never silently mixed with the new ones."""
    for path in paths:
        if not path.exists():
            continue
        prev = path.with_name(path.name + ".prev")
        if prev.is_dir():
            shutil.rmtree(prev)
        elif prev.exists():
            prev.unlink()
        path.rename(prev)


def _file_stamp(path: Path) -> str:
    """Content identity of an input file (a user may replace it by hand)."""
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"



def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# ---------------------------------------------------------------------- summary


def pipeline_summary(pipe: Pipeline, seconds: float) -> dict[str, Any]:
    by_name = {r.name: r for r in pipe.records}
    accuracy = {p: by_name[f"eval-{p}"].summary.get("accuracy") for p in POLICIES if f"eval-{p}" in by_name}
    prefs = by_name.get("prefs")
    return {
        "run": pipe.cfg.run, "run_dir": str(pipe.dir), "seconds": round(seconds, 2),
        "accuracy": accuracy,
        "pairs": {k: prefs.summary.get(f"pairs_{k}", 0) for k in ("correctness", "coherence")} if prefs else {},
        "stages": [{"stage": r.name, "status": r.status, "seconds": r.seconds} for r in pipe.records],
    }


def print_pipeline_summary(pipe: Pipeline, summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"looper pipeline: {summary['run_dir']}")
    for column in ("stage", "status", "time (s)", "result"):
        table.add_column(column, justify="right" if column == "time (s)" else "left")
    for record in pipe.records:
        table.add_row(record.name, record.status, f"{record.seconds:.1f}", _result_text(record))
    table.add_row("total", "", f"{summary['seconds']:.1f}", "", style="bold")
    Console().print(table)
    if summary["accuracy"]:
        accuracy = Table(title="test accuracy")
        for policy in summary["accuracy"]:
            accuracy.add_column(policy, justify="right")
        accuracy.add_row(*(_pct(v) for v in summary["accuracy"].values()))
        Console().print(accuracy)


def _result_text(record: StageRecord) -> str:
    s = record.summary
    if record.name.startswith("eval-"):
        return f"accuracy {_pct(s.get('accuracy'))} on {s.get('n', '?')} questions"
    if record.name == "prefs":
        return f"{s.get('pairs', 0)} pairs: {s.get('pairs_correctness', 0)} correctness, " \
               f"{s.get('pairs_coherence', 0)} coherence"
    if record.name == "rollout":
        return f"{s.get('solutions', 0)} solutions, sample accuracy {_pct(s.get('accuracy'))}, " \
               f"mean reward {_num(s.get('mean_reward'))}"
    if record.name in ("sft", "dpo", "ppo"):
        return f"{s.get('steps', '?')} steps, final loss {_num(s.get('final_loss'))}"
    return ""


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"
