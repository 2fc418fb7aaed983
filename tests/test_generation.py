"""The transformers generator: grouping of K samples and greedy decoding."""

from __future__ import annotations

from pathlib import Path

from looper_cli.engine import SamplingConfig
from looper_cli.engine.hf import HFGenerator


def test_greedy_with_several_samples_repeats_one_decode(tiny_model: Path) -> None:
    from looper_cli.models import load_model, load_tokenizer

    tok, model = load_tokenizer(tiny_model), load_model(tiny_model)
    prompts = ["Question: 2 apples and 3 apples?\nAnswer:", "Question: 7 times 6?\nAnswer:"]
    done: list[int] = []
    groups = HFGenerator(model, tok).generate(
        prompts, SamplingConfig(max_new_tokens=6, temperature=0, samples=3),
        on_prompt_done=lambda i, _: done.append(i))
    assert sorted(done) == [0, 1]
    for group in groups:
        assert len(group) == 3 and len({c.text for c in group}) == 1
        assert all(0 <= c.tokens <= 6 for c in group)
