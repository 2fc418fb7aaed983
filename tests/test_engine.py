"""The fast rollout engine on CPU (eager path, same code as the graphs run):
greedy equals transformers' greedy token for token, EOS stops a sequence the
same way, and K samples per prompt come back grouped and reproducible."""

from __future__ import annotations

import pytest

from looper_cli.errors import UserError
from looper_cli.generation import HFGenerator, SamplingConfig, make_generator
from looper_cli.synthetic import synthetic_problems


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def prompts():
    # Different lengths, so batches mix left padding.
    questions = [r["question"] for r in synthetic_problems(7, seed=3)]
    return [q[:30 + 9 * i] for i, q in enumerate(questions)]


def fast(model, tok):
    from looper_cli.engine import FastGenerator

    return FastGenerator(model, tok)


def as_tuples(groups):
    return [[(c.text, c.tokens, c.finished) for c in g] for g in groups]


def test_greedy_equals_transformers(model_and_tokenizer, prompts):
    model, tok = model_and_tokenizer
    cfg = SamplingConfig(max_new_tokens=20, temperature=0, samples=1, batch_size=3)
    assert as_tuples(fast(model, tok).generate(prompts, cfg)) == as_tuples(HFGenerator(model, tok).generate(prompts, cfg))


def test_eos_stops_each_sequence_like_transformers(model_and_tokenizer, prompts):
    import copy

    model, tok = model_and_tokenizer
    cfg = SamplingConfig(max_new_tokens=16, temperature=0, samples=1, batch_size=4)
    reference = fast(model, tok).generate_ids([tok(p).input_ids for p in prompts], cfg)
    # Make a token the model emits mid-sequence the EOS: some rows must stop early.
    early = reference[0][0][5]
    tok_eos = copy.deepcopy(tok)
    tok_eos.eos_token = tok.convert_ids_to_tokens(early)
    got = fast(model, tok_eos).generate(prompts, cfg)
    want = HFGenerator(model, tok_eos).generate(prompts, cfg)
    assert as_tuples(got) == as_tuples(want)
    assert got[0][0].finished and got[0][0].tokens == reference[0][0].index(early) < 16


def test_k_samples_grouped_per_prompt_and_reproducible(model_and_tokenizer, prompts):
    model, tok = model_and_tokenizer
    cfg = SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, samples=3, batch_size=6, seed=7)
    seen = []
    groups = fast(model, tok).generate(prompts, cfg, on_prompt_done=lambda i, g: seen.append((i, len(g))))
    assert sorted(seen) == [(i, 3) for i in range(len(prompts))]
    assert all(len(g) == 3 and all(0 < c.tokens <= 12 for c in g) for g in groups)
    assert any(len({c.text for c in g}) > 1 for g in groups), "samples of a prompt should differ"
    assert as_tuples(fast(model, tok).generate(prompts, cfg)) == as_tuples(groups)


def test_top_p_keeps_the_smallest_set_reaching_p():
    import torch

    from looper_cli.engine.sampling import _top_p_filter

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert (_top_p_filter(probs, 0.7) > 0).tolist() == [[True, True, False, False]]
    assert (_top_p_filter(probs, 0.1) > 0).tolist() == [[True, False, False, False]]


def test_engine_choice(model_and_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    from looper_cli.engine import FastGenerator

    model, tok = model_and_tokenizer
    assert FastGenerator.supports(model)
    assert isinstance(make_generator(model, tok, "auto"), HFGenerator)  # CPU: auto keeps HF
    assert isinstance(make_generator(model, tok, "fast"), FastGenerator)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32))
    assert not FastGenerator.supports(gpt2)
    with pytest.raises(UserError, match="Llama-family"):
        make_generator(gpt2, tok, "fast")


def test_lora_adapter_applies_like_transformers(tiny_model, prompts):
    """A PEFT-wrapped model goes through its LoRA layers (non-zero B) in the engine too."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    lora = get_peft_model(torch_model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    cfg = SamplingConfig(max_new_tokens=12, temperature=0, samples=1, batch_size=4)
    assert as_tuples(fast(lora, tok).generate(prompts, cfg)) == as_tuples(HFGenerator(lora, tok).generate(prompts, cfg))


def test_zero_new_tokens_gives_empty_completions(model_and_tokenizer, prompts):
    model, tok = model_and_tokenizer
    groups = fast(model, tok).generate(prompts[:2], SamplingConfig(max_new_tokens=0, samples=2))
    assert [[c.tokens for c in g] for g in groups] == [[0, 0], [0, 0]]


def test_prefill_in_chunks_changes_nothing(model_and_tokenizer, prompts, monkeypatch):
    """Long prompts are prefilled a few at a time; each chunk's KV must land in its own rows."""
    from looper_cli.engine import llama

    model, tok = model_and_tokenizer
    cfg = SamplingConfig(max_new_tokens=8, temperature=1.0, samples=2, batch_size=8, seed=3)
    whole = as_tuples(fast(model, tok).generate(prompts, cfg))
    monkeypatch.setattr(llama, "PREFILL_SCORE_BYTES", 1)  # one prompt per chunk
    assert as_tuples(fast(model, tok).generate(prompts, cfg)) == whole
