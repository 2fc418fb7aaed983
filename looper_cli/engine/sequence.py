"""A sequence: one completion being generated, with the KV blocks it owns.

A prompt with K completions is one `Group`. Only the group's first sequence
(the leader) is prefilled; when its prompt is done, the others are forked
from it and share its prompt blocks (see block_manager). Every sequence has
its own sampling settings and its own noise key, so what it samples depends
on the seed, the prompt and its index in the group, never on which other
sequences ran beside it.

The one rule the scheduler and the runner rely on: the tokens at positions
[num_computed, len(token_ids)) still have to go through the model. After a
prefill or a decode step covers them, the next token is sampled and appended,
so a running sequence always has exactly one token pending.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence as Seq


class Status(enum.Enum):
    WAITING = "waiting"  # to be prefilled (a new prompt or a preempted sequence)
    RUNNING = "running"  # prefilled; decoding one token at a time
    FINISHED = "finished"


@dataclass(frozen=True)
class SampleSettings:
    temperature: float  # 0: greedy
    top_p: float
    noise_key: int  # 32-bit seed of this sequence's sampling noise


@dataclass(eq=False)
class Group:
    """One prompt and its completions, in group order."""

    index: int  # the prompt's index in the caller's list
    prompt: list[int]
    settings: list[SampleSettings]  # one per completion
    max_new_tokens: int
    sequences: list["Sequence"] = field(default_factory=list)
    unfinished: int = 0
    forked: bool = False  # the other members exist (the leader's prompt was prefilled)

    @property
    def size(self) -> int:
        return len(self.settings)


@dataclass(eq=False)
class Sequence:
    group: Group
    index: int  # position in its group
    token_ids: list[int]  # prompt + generated
    settings: SampleSettings
    num_computed: int = 0  # leading tokens whose KV is in the cache
    block_table: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    status: Status = Status.WAITING
    finished_by_eos: bool = False

    @property
    def prompt_len(self) -> int:
        return len(self.group.prompt)

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - self.prompt_len

    @property
    def num_pending(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def forks_on_prefill(self) -> bool:
        """The leader, whose prompt prefill is shared by every member."""
        return self.index == 0 and not self.group.forked

    @property
    def seats(self) -> int:
        """Decode rows this sequence will take once prefilled."""
        return self.group.size if self.forks_on_prefill else 1

    @property
    def last_writable_position(self) -> int:
        """The last position whose KV is ever needed: the final token
        (number max_new_tokens) is sampled but never fed back."""
        return self.prompt_len + self.group.max_new_tokens - 2

    @property
    def steps_left(self) -> int:
        """Decode steps this sequence may still take (it writes one position a step)."""
        return self.last_writable_position - self.num_computed + 1

    @property
    def done(self) -> bool:
        return self.finished_by_eos or self.num_generated >= self.group.max_new_tokens

    def append(self, tokens: list[int], logprobs: list[float], eos: int | None) -> int:
        """Add sampled tokens up to the first EOS; returns how many were kept
        (one list slice per row and round: the host work stays small)."""
        end = tokens.index(eos) + 1 if eos in tokens else len(tokens)
        self.token_ids += tokens[:end]
        self.logprobs += logprobs[:end]
        self.finished_by_eos = end > 0 and tokens[end - 1] == eos
        return end

    def generated(self) -> list[int]:
        return self.token_ids[self.prompt_len:]


def noise_key(seed: int, prompt: Seq[int], index: int) -> int:
    """A stable 32-bit key of (seed, prompt, completion index): the same
    prompt draws the same samples in any batch, on any worker, after any
    resume or preemption."""
    digest = hashlib.blake2b(repr((seed, index, tuple(prompt))).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def make_group(index: int, prompt: Seq[int], cfg: Any) -> Group:
    """The group of one prompt under a SamplingConfig: a greedy completion
    first with `plus_greedy`, then `samples` sampled ones."""
    prompt = list(prompt)
    settings: list[SampleSettings] = []
    if cfg.plus_greedy:
        settings.append(SampleSettings(0.0, 1.0, noise_key(cfg.seed, prompt, -1)))
    temperature = max(0.0, float(cfg.temperature))
    settings += [SampleSettings(temperature, float(cfg.top_p), noise_key(cfg.seed, prompt, k))
                 for k in range(cfg.samples)]
    group = Group(index, prompt, settings, int(cfg.max_new_tokens))
    group.sequences.append(Sequence(group, 0, list(prompt), settings[0]))
    group.unfinished = group.size
    return group


def fork(leader: Sequence, index: int, block_table: list[int]) -> Sequence:
    """Member `index` of the leader's group, sharing its computed prompt."""
    group = leader.group
    return Sequence(group, index, list(leader.token_ids[:leader.prompt_len]), group.settings[index],
                    num_computed=leader.num_computed, block_table=block_table, status=Status.RUNNING)


