"""Rollouts: K sampled solutions per question, streamed to disk, then scored
by Regime W into `rollouts.jsonl`.

Layout next to the output (`runs/x/rollouts.jsonl`):

    rollouts.shards/shard-<i>.jsonl   one per worker; a question's K rows are
                                      written together (one group), then flushed
    rollouts.shards/generation.json   the settings the shards were made with
    rollouts.jsonl                    final, scored, written atomically
    bandit.json                       Regime W bandit state (loaded, learned, saved)
    rollouts.summary.json, rollouts.config.toml

Resume after any kill: complete groups on disk (in the shards or in the final
file) are kept, an incomplete group is dropped and generated again, so nothing
is lost or duplicated. Workers (one per GPU, or CPU processes for tests) take
a stable share of the questions (hash of the question id).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Optional

from looper_cli.errors import UserError, require_at_least, require_counts, require_sampling
from looper_cli.jsonl import JsonlAppender, atomic_write_json, atomic_write_jsonl, read_jsonl

SECTION = "rollout"
SHARDS_SUFFIX = ".shards"
GENERATION_SETTINGS = "generation.json"
ROW_KEYS = ("question_id", "sample_index", "text", "tokens")
# Settings that change what is generated: shards made under other values are not resumed.
GENERATION_FIELDS = ("base_model", "adapter", "data", "split", "samples", "temperature", "top_p",
                     "max_new_tokens", "seed", "template")
ENGINE_SUMMARY_KEYS = ("useful_tokens", "decode_steps", "mean_rows_busy", "slot_use", "preemptions",
                       "peak_kv_blocks", "kv_blocks")
SCORE_BATCH_GROUPS = 256  # groups per call into the compiled scorer (one progress step)
SCORE_SECTION = "score"
SCORE_ROW_KEYS = ("question_id", "text", "tokens")
# JSON types of the rollout row fields scoring reads: a wrong one is an error naming the line.
ROW_TYPES: dict[str, tuple[type, ...]] = {
    "question_id": (str, int), "text": (str,), "tokens": (int,), "sample_index": (int,),
    "gold": (int, float, type(None)), "question": (str, type(None))}

Report = Callable[[tuple], None]


@dataclass
class RolloutStageConfig:
    base_model: str = ""
    adapter: Optional[Path] = None
    data: str = "gsm8k"
    split: str = "train"
    limit: Optional[int] = None
    bare_answers: bool = False  # accept answers without '#### N' (read as that line)
    samples: int = 8
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 512
    batch_size: int = 256  # sequences in flight per worker (the engine's max_seqs)
    gpu_memory_utilization: float = 0.9  # share of each GPU the worker may fill (weights + KV cache)
    kv_cache_gib: Optional[float] = None  # an explicit KV cache size per worker
    gpus: Optional[int] = None  # N worker processes, one GPU each
    workers: Optional[int] = None  # N CPU worker processes (no GPU)
    output: Path = Path("runs/default/rollouts.jsonl")
    seed: int = 0
    engine: Literal["auto", "hf", "fast"] = "auto"
    template: Optional[Literal["chat", "plain"]] = None  # None: the adapter's (its config.toml), else chat
    alpha: float = 1.0
    beta: float = 0.5
    gamma: float = 0.1


@dataclass
class ScoreStageConfig:
    rollouts: Optional[Path] = None
    output: Optional[Path] = None  # default: rewrite `rollouts` in place
    alpha: float = 1.0
    beta: float = 0.5
    gamma: float = 0.1
    learn: bool = True
    drop_damaged: bool = False  # in place: let lines that cannot be read be dropped


@dataclass
class ShardJob:
    """What one worker does: generate `problems` into `shard_path`."""

    index: int
    shard_path: str
    problems: list[dict[str, Any]]
    cfg: RolloutStageConfig
    visible_devices: Optional[str] = None  # CUDA_VISIBLE_DEVICES of this worker ("" = CPU); None = inherit
    threads: Optional[int] = None


@dataclass
class GroupStore:
    """Complete groups found on disk, by question id, in first-seen order."""

    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dropped_rows: int = 0
    from_final: int = 0  # groups taken from the scored final file


# ----------------------------------------------------------------------------- paths


def shards_dir(output: Path) -> Path:
    return output.with_name(output.stem + SHARDS_SUFFIX)


def bandit_path(output: Path) -> Path:
    from looper_cli.scoring import BANDIT_STATE_NAME

    return output.parent / BANDIT_STATE_NAME


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + ".summary.json")


# ----------------------------------------------------------------------------- stage


def run_rollout(cfg: RolloutStageConfig) -> dict[str, Any]:
    """Generate what is missing, merge the shards, score new groups, write
    the final file and the summary. Returns the summary."""
    from looper_cli.config import save_resolved
    from looper_cli.data import load_problems
    from looper_cli.locks import claim_output
    from looper_cli.prompts import resolve_template

    check_config(cfg)
    cfg = with_absolute_paths(cfg)
    cfg = dataclasses.replace(cfg, template=resolve_template(cfg.template, cfg.adapter, cfg.base_model))
    output = Path(cfg.output)
    problems = load_problems(cfg.data, split=cfg.split, limit=cfg.limit, seed=cfg.seed,
                             bare_answers=cfg.bare_answers)
    shards = shards_dir(output)
    with claim_output(output, SECTION, folder=False), claim_output(bandit_path(output), SECTION, folder=False):
        check_generation_settings(cfg, shards)
        store = collect_complete_groups(output, shards, cfg.samples, compact=True)
        pending = [p for p in problems if p.id not in store.groups]
        started = time.perf_counter()
        generated = generate_pending(cfg, pending, shards, done=len(problems) - len(pending),
                                     total=len(problems))
        store = collect_complete_groups(output, shards, cfg.samples, compact=False)
        missing = [p.id for p in problems if p.id not in store.groups]
        if missing:
            raise UserError(f"{len(missing)} question(s) have no complete group after generation "
                            f"(first: {missing[0]}); rerun the same command to resume")
        order = {p.id: i for i, p in enumerate(problems)}
        rows = merge_and_score(output, store, order, cfg)
        save_resolved(cfg, SECTION, output.parent, name=output.stem + ".config.toml")
        summary = rollout_summary(rows, cfg, generated, time.perf_counter() - started)
        atomic_write_json(summary_path(output), summary)
    print_rollout_summary(summary)
    return summary


def check_config(cfg: RolloutStageConfig) -> None:
    if not cfg.base_model:
        raise UserError("rollout needs --base-model (a hub id, a model folder or a .gguf file)")
    from looper_cli.models import ModelSource, check_adapter_shape, is_adapter_dir

    ModelSource.parse(cfg.base_model)  # a bad path fails here, before any worker starts
    if cfg.adapter is not None and not Path(cfg.adapter).is_dir():
        raise UserError(f"adapter folder not found: {cfg.adapter}")
    if cfg.adapter is not None and not is_adapter_dir(cfg.adapter):
        raise UserError(f"{cfg.adapter} is not a LoRA adapter folder (no adapter_config.json)")
    if cfg.adapter is not None:
        check_adapter_shape(cfg.base_model, cfg.adapter)
    require_counts({"--limit": cfg.limit, "--samples": cfg.samples, "--batch-size": cfg.batch_size,
                    "--max-new-tokens": cfg.max_new_tokens, "--workers": cfg.workers})
    require_at_least("--gpus", cfg.gpus, 0)
    require_sampling(cfg.temperature, cfg.top_p)
    from looper_cli.engine import engine_config

    engine_config(cfg, group_size=cfg.samples)  # the memory options
    if cfg.gpus and cfg.workers:
        raise UserError("give --gpus N (one worker per GPU) or --workers N (CPU workers), not both")
    if Path(cfg.output).suffix != ".jsonl":
        raise UserError(f"--output must be a .jsonl file, not {cfg.output}")


def with_absolute_paths(cfg: RolloutStageConfig) -> RolloutStageConfig:
    """Local model, adapter and data paths made absolute: rows name what made
    them, and a resume from another folder recognises the same settings."""
    import dataclasses

    from looper_cli.models import absolute_if_local

    return dataclasses.replace(cfg, base_model=absolute_if_local(cfg.base_model), data=absolute_if_local(cfg.data),
                               adapter=Path(absolute_if_local(cfg.adapter)) if cfg.adapter else None)


def generation_settings(cfg: RolloutStageConfig) -> dict[str, Any]:
    values = asdict(cfg)
    return {k: (str(values[k]) if values[k] is not None else None) for k in GENERATION_FIELDS}


def check_generation_settings(cfg: RolloutStageConfig, shards: Path) -> None:
    """Resuming mixes old and new groups, so they must come from the same
    settings; the first run records them."""
    from looper_cli.config import changed_keys

    path = shards / GENERATION_SETTINGS
    wanted = generation_settings(cfg)
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = sorted(changed_keys(recorded, wanted, wanted))
        if changed and not _holds_rollouts(Path(cfg.output), shards):
            changed = []  # an earlier run stopped before its first group: nothing to mix
            atomic_write_json(path, wanted)
        if changed:
            diffs = ", ".join(f"{k} {recorded.get(k)} -> {wanted[k]}" for k in changed)
            raise UserError(f"{cfg.output} holds rollouts made with other settings ({diffs}); "
                            "choose another --output or delete the old rollouts")
    else:
        atomic_write_json(path, wanted)


def _holds_rollouts(output: Path, shards: Path) -> bool:
    return output.is_file() or any(f.stat().st_size for f in shards.glob("shard-*.jsonl"))


# ----------------------------------------------------------------------------- groups on disk


def complete_groups(rows: Iterable[dict[str, Any]], k: int) -> tuple[list[list[dict[str, Any]]], int]:
    """Split rows (in file order) into runs that start at sample_index 0 and
    keep the runs that hold exactly samples 0..k-1 of one question. Returns
    (complete groups, number of rows dropped)."""
    runs: list[list[dict[str, Any]]] = []
    for row in rows:
        if not runs or row["sample_index"] == 0 or row["question_id"] != runs[-1][0]["question_id"]:
            runs.append([])
        runs[-1].append(row)
    kept = [r for r in runs if [x["sample_index"] for x in r] == list(range(k))]
    return kept, sum(len(r) for r in runs) - k * len(kept)


def collect_complete_groups(output: Path, shards: Path, k: int, compact: bool) -> GroupStore:
    """Complete groups from the final file (scored rows, kept as they are)
    and from every shard file. With `compact`, shard files are rewritten
    atomically without incomplete or duplicate groups, so appends start clean."""
    store = GroupStore()
    final = read_jsonl(output, required=ROW_KEYS).rows if output.is_file() else []
    for group in complete_groups(final, k)[0]:
        store.groups.setdefault(group[0]["question_id"], group)
    store.from_final = len(store.groups)
    for shard in sorted(shards.glob("shard-*.jsonl")):
        result = read_jsonl(shard, required=ROW_KEYS)
        groups, incomplete = complete_groups(result.rows, k)
        incomplete += len(result.bad_lines)
        for group in groups:
            store.groups.setdefault(group[0]["question_id"], group)
        if compact and incomplete:
            atomic_write_jsonl(shard, [row for g in groups for row in g])
        store.dropped_rows += incomplete
    return store


# ----------------------------------------------------------------------------- generation


def split_even(items: list[Any], n: int) -> list[list[Any]]:
    """Round-robin into n lists whose sizes differ by at most one. Workers
    finish together only if they hold the same number of engine batches; a
    hash split of 1,024 questions over 4 GPUs gives each 256 +- 16, and one
    question past a batch boundary costs a whole batch that the other GPUs
    wait for. Any split resumes correctly: the groups of every shard file
    are read back, whichever worker wrote them."""
    return [items[i::n] for i in range(n)]


def plan_workers(cfg: RolloutStageConfig) -> list[Optional[str]]:
    """CUDA_VISIBLE_DEVICES per worker: one GPU each under --gpus N, "" (CPU)
    under --workers N, None (inherit: the default device) for one worker."""
    if cfg.gpus is not None:
        from looper_cli.gpus import check_gpus

        n = check_gpus(cfg.gpus)
        if n == 0:
            return [""]
        if n == 1:
            return [None]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices: list[Optional[str]] = list(visible.split(",") if visible else map(str, range(n)))
        return devices[:n]  # GPU i of the devices this process may use
    n = cfg.workers or 1
    return [None] if n == 1 else [""] * n


def generate_pending(cfg: RolloutStageConfig, pending: list[Any], shards: Path, done: int,
                     total: int) -> dict[str, Any]:
    """Generate every pending question into the shard files, with one
    progress bar over all workers. Returns counts made by this run."""
    devices = plan_workers(cfg)
    n = len(devices)
    buckets = split_even([{"id": p.id, "question": p.question, "gold": p.gold}
                          for p in sorted(pending, key=lambda p: p.id)], n)
    cpu_workers = n > 1 and devices[0] == ""
    jobs = [ShardJob(i, str(shards / f"shard-{i}.jsonl"), buckets[i], cfg, devices[i],
                     threads=1 if cpu_workers else None) for i in range(n) if buckets[i]]
    tracker = _ProgressTracker(done, total)
    with tracker:
        if n == 1 and jobs:
            if devices[0] == "":
                os.environ["CUDA_VISIBLE_DEVICES"] = ""  # --gpus 0: CPU, before torch looks
            run_shard_job(jobs[0], tracker.handle)  # one worker: no process to spawn
        elif jobs:
            _run_worker_processes(jobs, tracker)
    return {"questions": tracker.questions, "solutions": tracker.solutions, "tokens": tracker.tokens,
            "seconds": tracker.generation_seconds(), "engine": tracker.engine_stats()}


class _ProgressTracker:
    """The parent's Rich bar: questions, solutions, generated tokens/s."""

    def __init__(self, done: int, total: int):
        from rich.progress import TextColumn

        from looper_cli.progress import make_progress

        self.questions = self.solutions = self.tokens = 0
        self.worker_stats: list[dict[str, Any]] = []  # each worker's engine figures, when it is done
        self.started: Optional[float] = None  # first worker ready: model loading is not generation
        self.finished: Optional[float] = None
        self.progress = make_progress(TextColumn("{task.fields[info]}"))
        self.task = self.progress.add_task("rollout", total=total, completed=done, info="")

    def handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "ready" and self.started is None:
            self.started = time.perf_counter()
        elif kind == "group":
            _, _, solutions, tokens = message
            self.questions += 1
            self.solutions += solutions
            self.tokens += tokens
            self.finished = time.perf_counter()
            rate = self.tokens / max(1e-9, self.finished - (self.started or self.finished))
            self.progress.update(self.task, advance=1,
                                 info=f"{self.solutions} solutions  {rate:,.0f} tok/s")
        elif kind == "done":
            self.worker_stats.append(message[2])
        elif kind == "error":
            raise UserError(message[2])

    def engine_stats(self) -> dict[str, Any]:
        """The workers' engine figures: counts summed, peaks and rates per worker's best."""
        from looper_cli.engine import GenerationStats

        total = GenerationStats()
        for stats in self.worker_stats:
            total.add(stats)
        return {k: total.as_dict()[k] for k in ENGINE_SUMMARY_KEYS}

    def generation_seconds(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return self.finished - self.started

    def __enter__(self) -> "_ProgressTracker":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _run_worker_processes(jobs: list[ShardJob], tracker: _ProgressTracker) -> None:
    """Spawned workers (fresh interpreters: CUDA and fork do not mix) report
    finished groups on a queue; a worker that dies fails the stage with a
    resume hint, the others are stopped."""
    import multiprocessing as mp
    from queue import Empty

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = {job.index: ctx.Process(target=_worker_main, args=(job, queue), daemon=True) for job in jobs}
    for proc in procs.values():
        proc.start()
    finished: set[int] = set()
    try:
        while len(finished) < len(procs):
            try:
                message = queue.get(timeout=0.5)
            except Empty:
                _check_workers_alive(procs, finished)
                continue
            if message[0] == "done":
                finished.add(message[1])
            tracker.handle(message)
    finally:
        for proc in procs.values():
            if proc.is_alive() and proc.exitcode is None:
                proc.terminate()
            proc.join()


def _check_workers_alive(procs: dict[int, Any], finished: set[int]) -> None:
    for index, proc in procs.items():
        if index not in finished and proc.exitcode is not None:
            raise UserError(f"rollout worker {index} stopped (exit code {proc.exitcode}); "
                            "finished groups are on disk: rerun the same command to resume")


def _worker_main(job: ShardJob, queue: Any) -> None:
    """Entry point of a worker process."""
    _die_with_parent()
    if job.visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = job.visible_devices
    if job.threads:
        os.environ["OMP_NUM_THREADS"] = str(job.threads)
    try:
        run_shard_job(job, queue.put)
    except UserError as err:
        queue.put(("error", job.index, str(err)))
    except Exception as err:  # reported to the parent as one line
        from looper_cli.errors import environment_error_message

        refused = environment_error_message(err)  # a full disk or memory: one line, as in the parent
        if refused is not None:
            queue.put(("error", job.index, f"rollout worker {job.index}: {refused}"))
            return
        import traceback

        traceback.print_exc()  # a bug: its traceback goes to stderr
        queue.put(("error", job.index, f"rollout worker {job.index} failed: {type(err).__name__}: {err}"
                   .splitlines()[0]))


def _die_with_parent() -> None:
    """A worker orphaned by a killed parent must stop writing: its rerun
    would otherwise append the same questions twice (Linux only)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_shard_job(job: ShardJob, report: Report) -> None:
    """Load the model, generate the job's questions, append each finished
    group to the shard file (K rows, one flush), report it."""
    import torch

    from looper_cli.engine import SamplingConfig
    from looper_cli.models import load_model, load_tokenizer
    from looper_cli.prompts import build_prompt

    if job.threads:
        torch.set_num_threads(job.threads)
    cfg = job.cfg
    _quiet_transformers()
    tokenizer = load_tokenizer(cfg.base_model)
    model = load_model(cfg.base_model, cfg.adapter)
    model.eval()
    generator = _make_generator(model, tokenizer, cfg)
    report(("ready", job.index))
    try:
        prompts = [build_prompt(tokenizer, p["question"], cfg.template) for p in job.problems]
    except ValueError as err:
        raise UserError(str(err)) from None
    # The engine keys its noise by (seed, prompt, sample): a question gets the
    # same samples whichever worker runs it and whatever ran beside it.
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, samples=cfg.samples, seed=cfg.seed)
    with JsonlAppender(job.shard_path) as out:
        def on_prompt_done(i: int, completions: list[Any]) -> None:
            rows = solution_rows(job.problems[i], prompts[i], completions, cfg)
            out.write_many(rows)
            report(("group", job.index, len(rows), sum(r["tokens"] for r in rows)))

        generator.generate(prompts, sampling, on_prompt_done)
    report(("done", job.index, generator.stats.as_dict()))


def _quiet_transformers() -> None:
    """transformers' own loading bars would fight the Rich bar."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()


def _make_generator(model: Any, tokenizer: Any, cfg: RolloutStageConfig) -> Any:
    from looper_cli.engine import engine_config, make_generator

    return make_generator(model, tokenizer, cfg.engine, engine_config(cfg, group_size=cfg.samples))  # type: ignore[arg-type]


def solution_rows(problem: dict[str, Any], prompt: str, completions: list[Any],
                  cfg: RolloutStageConfig) -> list[dict[str, Any]]:
    """The unscored rows of one group, in sample order."""
    return [{
        "question_id": problem["id"], "prompt": prompt, "question": problem["question"],
        "gold": problem["gold"], "sample_index": k, "text": c.text, "tokens": int(c.tokens),
        "finished": bool(c.finished), "model": cfg.base_model,
        "adapter": str(cfg.adapter) if cfg.adapter else None, "seed": cfg.seed,
    } for k, c in enumerate(completions)]


# ----------------------------------------------------------------------------- scoring


def merge_and_score(output: Path, store: GroupStore, order: dict[str, int],
                    cfg: RolloutStageConfig) -> list[dict[str, Any]]:
    """The union of the complete groups, in question order; groups already
    scored in the final file keep their scores (the bandit learns from each
    group once); the rest are scored now. Written atomically."""
    from looper_cli.reward import RewardWeights
    from looper_cli.scoring import load_bandit, load_taught_groups, save_bandit

    ids = sorted(store.groups, key=lambda q: (order.get(q, len(order)), q))
    groups = [store.groups[q] for q in ids]
    unscored = [g for g in groups if any("reward" not in r for r in g)]
    bandit = load_bandit(bandit_path(output), seed=cfg.seed)
    taught = load_taught_groups(bandit_path(output))
    weights = RewardWeights(cfg.alpha, cfg.beta, cfg.gamma)
    rows = [row for g in groups for row in g]
    if not unscored and store.from_final == len(groups):
        return rows  # nothing new: the final file already is the union
    taught |= score_row_groups(unscored, bandit, weights, description="score", learn=True)
    atomic_write_jsonl(output, rows)
    save_bandit(bandit, bandit_path(output), taught)  # after the rows: a kill here re-learns nothing twice
    return rows


def score_row_groups(groups: list[list[dict[str, Any]]], bandit: Any, weights: Any,
                     description: str = "score", learn: bool = True) -> set[str]:
    """Add the Regime W fields and the reward to every row, in place, in
    batches of groups (one progress step per batch). With `learn`, the bandit
    learns from groups with known gold; returns the keys of those groups."""
    from regime_w_core import extract_answers

    from looper_cli.progress import make_progress
    from looper_cli.scoring import score_groups

    if not groups:
        return set()
    with make_progress() as progress:
        task = progress.add_task(description, total=len(groups))
        for start in range(0, len(groups), SCORE_BATCH_GROUPS):
            batch = groups[start:start + SCORE_BATCH_GROUPS]
            golds = [_gold(g[0]) for g in batch]
            scored = score_groups(
                [[r["text"] for r in g] for g in batch], [[int(r["tokens"]) for r in g] for g in batch],
                bandit, golds=golds if any(x is not None for x in golds) else None,
                questions=[str(g[0].get("question") or "") for g in batch], weights=weights, learn=learn)
            flat = [row for g in batch for row in g]
            answers = extract_answers([r["text"] for r in flat], "auto")
            for i, (row, found) in enumerate(zip(flat, answers)):
                row.update(scored.row_fields(i))
                row["answer_flexible"] = bool(found.flexible) if found is not None else None
            progress.update(task, advance=len(batch))
    return {_group_key(g) for g in groups if _gold(g[0]) is not None} if learn else set()


def _group_key(group: list[dict[str, Any]]) -> str:
    from looper_cli.scoring import group_key

    return group_key(group[0]["question_id"], [r["text"] for r in group], _gold(group[0]))


def _gold(row: dict[str, Any]) -> Optional[float]:
    gold = row.get("gold")
    return None if gold is None else float(gold)


def run_score(cfg: ScoreStageConfig) -> dict[str, Any]:
    """`looper score`: rescore a rollouts file, print and return the summary."""
    from looper_cli.reward import RewardWeights

    if cfg.rollouts is None:
        raise UserError("score needs a rollouts file")
    summary = score_rollouts_file(cfg.rollouts, cfg.output, RewardWeights(cfg.alpha, cfg.beta, cfg.gamma),
                                  learn=cfg.learn, drop_damaged=cfg.drop_damaged)
    print_rollout_summary(summary, title="looper score: done")
    return summary


def score_rollouts_file(path: str | Path, output: str | Path | None = None, weights: Any = None,
                        learn: bool = True, drop_damaged: bool = False) -> dict[str, Any]:
    """(Re)score a rollouts file: group rows by question (file order), score
    every group, write the scored file atomically (in place by default), and
    load/save the bandit next to the input. The bandit learns each group once
    (bandit.json records the groups it learned from); a group it already
    learned from is rescored without teaching it again."""
    from contextlib import nullcontext

    from looper_cli.errors import require_file
    from looper_cli.locks import claim_output

    src = require_file(path, "rollouts file")
    dest = Path(output) if output else src
    with claim_output(dest, SCORE_SECTION, folder=False), \
            (claim_output(bandit_path(src), SCORE_SECTION, folder=False) if learn else nullcontext()):
        return _score_file(src, dest, weights, learn, drop_damaged)


def _score_file(src: Path, dest: Path, weights: Any, learn: bool, drop_damaged: bool) -> dict[str, Any]:
    from looper_cli.jsonl import require_field_types
    from looper_cli.reward import RewardWeights
    from looper_cli.scoring import load_bandit, load_taught_groups, save_bandit

    result = read_jsonl(src, required=SCORE_ROW_KEYS)
    if not result.rows:
        raise UserError(f"no rollout rows in {src} (each row needs {', '.join(SCORE_ROW_KEYS)})")
    require_field_types(result, src, ROW_TYPES)
    if result.bad_lines and dest.resolve() == src.resolve() and not drop_damaged:
        raise UserError(f"{src} has {len(result.bad_lines)} line(s) that cannot be read (first: line "
                        f"{result.bad_lines[0]}); rewriting it in place would drop them: fix them, write "
                        "elsewhere with --output, or pass --drop-damaged")
    groups = group_by_question(result.rows)
    bandit_file = bandit_path(src)
    bandit = load_bandit(bandit_file)
    taught = load_taught_groups(bandit_file)
    weights = weights or RewardWeights()
    new = [learn and _group_key(g) not in taught for g in groups]
    learned = score_row_groups([g for g, n in zip(groups, new) if n], bandit, weights, learn=True)
    score_row_groups([g for g, n in zip(groups, new) if not n], bandit, weights, description="rescore",
                     learn=False)
    rows = [row for g in groups for row in g]
    atomic_write_jsonl(dest, rows)
    if learn:
        save_bandit(bandit, bandit_file, taught | learned)
    return {"input": str(src), "output": str(dest), "questions": len(groups), "solutions": len(rows),
            "skipped_lines": len(result.bad_lines), **_accuracy_and_reward(rows),
            "bandit": str(bandit_file) if learn else None, "bandit_new_groups": len(learned)}


def group_by_question(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows grouped by question id, groups in first-appearance order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["question_id"]), []).append(row)
    return list(groups.values())


# ----------------------------------------------------------------------------- summary


def _accuracy_and_reward(rows: list[dict[str, Any]]) -> dict[str, Any]:
    judged = [r["correct"] for r in rows if r.get("correct") is not None]
    rewards = [r["reward"] for r in rows if r.get("reward") is not None]
    return {"accuracy": sum(judged) / len(judged) if judged else None,
            "mean_reward": sum(rewards) / len(rewards) if rewards else None}


def rollout_summary(rows: list[dict[str, Any]], cfg: RolloutStageConfig, generated: dict[str, Any],
                    seconds: float) -> dict[str, Any]:
    """tokens_per_s counts generated tokens over generation time (from the
    first worker ready to the last group), not model loading."""
    questions = {r["question_id"] for r in rows}
    return {
        "stage": SECTION, "output": str(cfg.output), "questions": len(questions), "solutions": len(rows),
        **_accuracy_and_reward(rows),
        "generated_questions": generated["questions"], "generated_tokens": generated["tokens"],
        "tokens_per_s": round(generated["tokens"] / generated["seconds"], 1) if generated["seconds"] else None,
        "seconds": round(seconds, 3), "engine": generated.get("engine", {}),
    }


def print_rollout_summary(summary: dict[str, Any], title: str = "looper rollout: done") -> None:
    from rich.console import Console
    from rich.table import Table

    from looper_cli.progress import format_value

    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        if isinstance(value, dict):
            for inner, figure in value.items():
                if figure is not None:
                    table.add_row(f"{key} {inner}".replace("_", " "), format_value(inner, figure))
        elif key != "stage" and value is not None:
            table.add_row(key.replace("_", " "), format_value(key, value))
    Console().print(table)
