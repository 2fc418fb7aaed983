"""The paged engine on CPU (eager: the same scheduler, block manager, runner
and sampler the CUDA graphs run): greedy equals transformers' greedy token for
token, with and without preemption and chunked prefill; EOS stops a sequence
the same way; the K samples of a prompt come back grouped and are the same
under any concurrency; LoRA layers apply unmerged."""

from __future__ import annotations

import pytest

from looper_cli.engine import EngineConfig, SamplingConfig, make_generator
from looper_cli.engine.generator import FastGenerator
from looper_cli.engine.hf import HFGenerator
from looper_cli.errors import UserError
from looper_cli.synthetic import synthetic_problems

# Few blocks of 4 tokens for at most 3 rows: sequences are preempted and recomputed.
TIGHT = EngineConfig(max_seqs=3, num_blocks=16, block_size=4, decode_steps=3)
# Prompts prefilled a few tokens a round, in pieces.
CHUNKED = EngineConfig(max_seqs=4, max_batched_tokens=7, block_size=4)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def prompts():
    # Different lengths, so prompts end at different places in their last block.
    questions = [r["question"] for r in synthetic_problems(7, seed=3)]
    return [q[:30 + 9 * i] for i, q in enumerate(questions)]


def as_tuples(groups):
    return [[(c.text, c.tokens, c.finished) for c in g] for g in groups]


def token_ids(groups):
    return [[c.token_ids for c in g] for g in groups]


@pytest.mark.parametrize("config", [EngineConfig(max_seqs=3), TIGHT, CHUNKED], ids=["refill", "preempt", "chunked"])
def test_greedy_equals_transformers(model_and_tokenizer, prompts, config):
    model, tok = model_and_tokenizer
    cfg = SamplingConfig(max_new_tokens=20, temperature=0, samples=1)
    engine = FastGenerator(model, tok, config)
    assert as_tuples(engine.generate(prompts, cfg)) == as_tuples(HFGenerator(model, tok).generate(prompts, cfg))
    if config is TIGHT:
        assert engine.stats.preemptions > 0, "the tight cache should have forced preemption"


def test_rounds_longer_than_the_decode_buffers_keep_every_token(model_and_tokenizer, prompts):
    """The decode buffers hold ROUND_COLUMNS steps' samples; a longer round reads them back in parts."""
    import torch

    from looper_cli.engine.model_runner import ROUND_COLUMNS

    model, tok = model_and_tokenizer
    steps = ROUND_COLUMNS + 5
    cfg = SamplingConfig(max_new_tokens=steps + 3, temperature=0, samples=1, logprobs=True)
    engine = FastGenerator(model, tok, EngineConfig(max_seqs=3, decode_steps=steps, drain_decode_steps=steps))
    got = engine.generate(prompts, cfg)
    assert as_tuples(got) == as_tuples(HFGenerator(model, tok).generate(prompts, cfg))
    assert all(len(c.logprobs) == len(c.token_ids) for g in got for c in g)
    runner = engine.runner  # graphs replayed on their own (benchmarks) wrap around the columns
    with torch.inference_mode():
        runner._fill_inputs([], 1)
        for _ in range(ROUND_COLUMNS + 2):
            runner._run_step(1, False)
    assert int(runner.inputs.step) == 2


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_without_text_the_completions_keep_their_ids_and_logprobs(model_and_tokenizer, prompts, engine):
    """ppo's setting: TRL decodes the ids itself, so the engines skip it."""
    model, tok = model_and_tokenizer
    cfg = SamplingConfig(max_new_tokens=12, temperature=0.8, samples=2, seed=3, logprobs=True)
    generator = make_generator(model, tok, engine)
    with_text = generator.generate(prompts[:2], cfg)
    cfg.text = False
    without = generator.generate(prompts[:2], cfg)
    if engine == "fast":  # its noise is keyed by seed, prompt and position: the same samples again
        assert token_ids(without) == token_ids(with_text)
    assert all(c.text == "" and c.logprobs and len(c.logprobs) == len(c.token_ids) for g in without for c in g)
    assert any(c.text for g in with_text for c in g)


def test_eos_stops_each_sequence_like_transformers(model_and_tokenizer, prompts):
    import copy

    model, tok = model_and_tokenizer
    cfg = SamplingConfig(max_new_tokens=16, temperature=0, samples=1)
    reference = FastGenerator(model, tok).generate(prompts, cfg)
    # Make a token the model emits mid-sequence the EOS: some rows must stop early.
    early = reference[0][0].token_ids[5]
    tok_eos = copy.deepcopy(tok)
    tok_eos.eos_token = tok.convert_ids_to_tokens(early)
    got = FastGenerator(model, tok_eos, EngineConfig(max_seqs=2)).generate(prompts, cfg)
    assert as_tuples(got) == as_tuples(HFGenerator(model, tok_eos).generate(prompts, cfg))
    assert got[0][0].finished and got[0][0].tokens == reference[0][0].token_ids.index(early) < 16
    assert got[0][0].token_ids[-1] == early  # the EOS is kept in the ids, not in the text


def test_samples_grouped_and_the_same_under_any_concurrency(model_and_tokenizer, prompts):
    """Noise is keyed by (seed, prompt, sample, position): preemption,
    other batch sizes and chunked prefill draw the same tokens."""
    model, tok = model_and_tokenizer
    cfg = SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, samples=3, seed=7)
    seen = []
    groups = FastGenerator(model, tok, EngineConfig(max_seqs=6)).generate(
        prompts, cfg, on_prompt_done=lambda i, g: seen.append((i, len(g))))
    assert sorted(seen) == [(i, 3) for i in range(len(prompts))]
    assert all(len(g) == 3 and all(0 < c.tokens <= 12 for c in g) for g in groups)
    assert any(len({c.text for c in g}) > 1 for g in groups), "samples of a prompt should differ"
    for config in (TIGHT, CHUNKED):
        assert token_ids(FastGenerator(model, tok, config).generate(prompts, cfg)) == token_ids(groups)
    other_seed = SamplingConfig(**{**cfg.__dict__, "seed": 8})
    assert token_ids(FastGenerator(model, tok).generate(prompts, other_seed)) != token_ids(groups)


def test_plus_greedy_puts_the_greedy_completion_first(model_and_tokenizer, prompts):
    model, tok = model_and_tokenizer
    greedy = FastGenerator(model, tok).generate(prompts, SamplingConfig(max_new_tokens=10, temperature=0))
    both = FastGenerator(model, tok, EngineConfig(max_seqs=5)).generate(
        prompts, SamplingConfig(max_new_tokens=10, temperature=1.0, samples=2, plus_greedy=True))
    assert [g[:1] for g in as_tuples(both)] == as_tuples(greedy)
    assert all(len(g) == 3 for g in both)


def test_logprobs_equal_transformers_log_softmax(model_and_tokenizer, prompts):
    """Each returned log-prob is log_softmax(logits / T) of the chosen token,
    from the model's own forward on the full text."""
    import torch

    model, tok = model_and_tokenizer
    cfg = SamplingConfig(max_new_tokens=8, temperature=0.7, samples=2, seed=1, logprobs=True)
    groups = FastGenerator(model, tok, TIGHT).generate(prompts[:3], cfg)
    for prompt, group in zip(prompts[:3], groups):
        ids = tok(prompt, add_special_tokens=False).input_ids
        for completion in group:
            full = torch.tensor([ids + completion.token_ids])
            with torch.no_grad():
                logits = model(full).logits[0, len(ids) - 1:-1].float() / cfg.temperature
            want = logits.log_softmax(-1).gather(1, full[0, len(ids):, None]).squeeze(1)
            assert torch.allclose(torch.tensor(completion.logprobs), want, atol=1e-4)


def test_engine_choice(model_and_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    model, tok = model_and_tokenizer
    assert FastGenerator.supports(model)
    assert isinstance(make_generator(model, tok, "auto"), HFGenerator)  # CPU: auto keeps HF
    assert isinstance(make_generator(model, tok, "fast"), FastGenerator)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32))
    assert not FastGenerator.supports(gpt2)
    with pytest.raises(UserError, match="Llama-family"):
        make_generator(gpt2, tok, "fast")
    odd_heads = LlamaForCausalLM(LlamaConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1, vocab_size=64))
    assert not FastGenerator.supports(odd_heads)  # head dim 24: the attention kernel needs a power of two
    with pytest.raises(UserError, match="power-of-two head dimension, not 24"):
        make_generator(odd_heads, tok, "fast")


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "up_proj", "o_proj"]])
def test_lora_adapter_applies_unmerged_like_transformers(tiny_model, prompts, targets):
    """A PEFT-wrapped model goes through its LoRA layers (non-zero B) in the engine too: on every
    projection (q/k/v and gate/up fused), and on some only (a fused group of adapted and plain
    projections), with a plain projection outside a group (down) read in place."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    lora = get_peft_model(torch_model, LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    cfg = SamplingConfig(max_new_tokens=12, temperature=0)
    engine = FastGenerator(lora, tok, EngineConfig(max_seqs=4))
    got = engine.generate(prompts, cfg)
    assert as_tuples(got) == as_tuples(HFGenerator(lora, tok).generate(prompts, cfg))
    layer = engine.runner.weights.layers[0]
    assert len(layer.qkv) == 1 and len(layer.gate_up) == 1  # one matmul each
    if targets != "all-linear":
        assert layer.down is lora.base_model.model.model.layers[0].mlp.down_proj.weight  # in place


def test_sampling_turns_lora_dropout_off_and_gives_training_mode_back(tiny_model, prompts):
    """ppo samples from a model in training mode. LoRA dropout must be off while the engine
    samples (here on lm_head too, which the engine calls as a module), and every module is back
    in training mode after."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                          LoraConfig(r=4, lora_dropout=0.5, target_modules=["q_proj", "lm_head"],
                                     init_lora_weights=False))
    lora.train()
    cfg = SamplingConfig(max_new_tokens=12, temperature=0)
    got = FastGenerator(lora, tok, EngineConfig(max_seqs=4)).generate(prompts, cfg)
    assert all(module.training for module in lora.modules())
    lora.eval()
    assert as_tuples(got) == as_tuples(HFGenerator(lora, tok).generate(prompts, cfg))


def test_zero_new_tokens_and_errors(model_and_tokenizer, prompts):
    model, tok = model_and_tokenizer
    engine = FastGenerator(model, tok, EngineConfig(max_seqs=4))
    groups = engine.generate(prompts[:2], SamplingConfig(max_new_tokens=0, samples=2))
    assert [[c.tokens for c in g] for g in groups] == [[0, 0], [0, 0]]
    with pytest.raises(UserError, match="sequences in flight"):
        engine.generate(prompts[:1], SamplingConfig(max_new_tokens=4, samples=5))
    with pytest.raises(UserError, match="KV blocks"):
        FastGenerator(model, tok, EngineConfig(num_blocks=3, block_size=4)).generate(
            prompts[:1], SamplingConfig(max_new_tokens=40))
    with pytest.raises(UserError, match="gpu-memory-utilization"):
        FastGenerator(model, tok, EngineConfig(gpu_memory_utilization=1.5))


def test_stats_count_useful_tokens_and_slot_use(model_and_tokenizer, prompts):
    model, tok = model_and_tokenizer
    engine = FastGenerator(model, tok, EngineConfig(max_seqs=4, decode_steps=1))
    groups = engine.generate(prompts, SamplingConfig(max_new_tokens=9, temperature=1.0, samples=2))
    stats = engine.stats
    assert stats.useful_tokens == sum(len(c.token_ids) for g in groups for c in g)
    # Every sampled token but each sequence's first (sampled after prefill) came from a decode row.
    assert stats.busy_rows == stats.useful_tokens - 2 * len(prompts)
    assert 0 < stats.slot_use <= 1 and stats.peak_kv_blocks <= stats.kv_blocks
    assert stats.mean_rows_busy <= 4


def test_release_frees_the_cache_and_the_next_call_rebuilds_it(model_and_tokenizer, prompts):
    model, tok = model_and_tokenizer
    engine = FastGenerator(model, tok, EngineConfig(max_seqs=4))
    cfg = SamplingConfig(max_new_tokens=6, temperature=0)
    first = engine.generate(prompts, cfg)
    engine.release()
    assert engine.runner.cache is None
    assert as_tuples(engine.generate(prompts, cfg)) == as_tuples(first)


def test_compiled_prefill_takes_any_prompt_length_without_recompiling(model_and_tokenizer):
    """On a GPU the layer pieces are torch.compiled; prefill marks the token
    dimension dynamic, so a second prompt length does not recompile them
    (run 18: a 3 s recompile inside ppo's second step). Compiled here on CPU."""
    import torch
    from torch._dynamo.utils import counters

    from looper_cli.engine import model_runner as mr
    from looper_cli.engine.llama import compiled
    from looper_cli.engine.scheduler import Chunk
    from looper_cli.engine.sequence import Group, SampleSettings, Sequence

    model, _ = model_and_tokenizer
    runner = mr.ModelRunner(model, EngineConfig(max_seqs=4, num_blocks=64))
    runner.pieces = mr.Pieces(*map(compiled, (mr.pre_attention, mr.between_layers, mr.last_layer,
                                              mr.decode_addresses)))
    runner.prepare(256)
    first_block = 1

    def prompt_chunk(length: int) -> Chunk:
        nonlocal first_block
        group = Group(0, list(range(1, length + 1)), [SampleSettings(0.0, 1.0, 1)], 4)
        seq = Sequence(group, 0, list(group.prompt), group.settings[0])
        seq.block_table = list(range(first_block, first_block + -(-length // runner.block_size)))
        first_block += len(seq.block_table)
        return Chunk(seq, 0, length)

    with torch.inference_mode():
        runner.prefill([prompt_chunk(37)])
        graphs = counters["stats"]["unique_graphs"]
        for length in (53, 70):
            runner.prefill([prompt_chunk(length)])
    assert counters["stats"]["unique_graphs"] == graphs
