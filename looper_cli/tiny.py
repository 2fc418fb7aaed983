"""A tiny random-initialised Llama with a BPE tokenizer trained on the given
problems, built in seconds on CPU. For tests and the built-in default run:
it exercises every real code path (transformers, PEFT, TRL) at toy size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from looper_cli.prompts import SYSTEM_PROMPT

SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
# Role markers plus <|end|> as EOS: enough of a chat template for the
# tutoring prompts, and the same shape real instruct models use.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class TinyConfig:
    vocab_size: int = 1024
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 176
    max_positions: int = 1024
    seed: int = 0


def run_tiny(out_dir: str | Path, data: str, limit: int, seed: int, force: bool = False) -> Path:
    """`looper tiny`: build the model into `out_dir`, which must be new or
    empty unless `force` (a typo must not overwrite a trained model)."""
    from looper_cli.data import load_problems
    from looper_cli.errors import UserError
    from looper_cli.locks import claim_output

    out = Path(out_dir)
    with claim_output(out, "tiny", folder=True):
        if out.is_dir() and any(out.iterdir()) and not force:
            raise UserError(f"{out} is not empty; pass --force to overwrite it, or choose another folder")
        problems = load_problems(data, split="train", limit=limit, seed=seed)
        return build_tiny_model(out, [p.question + "\n" + p.answer for p in problems], TinyConfig(seed=seed))


def build_tiny_model(out_dir: str | Path, texts: Iterable[str], cfg: TinyConfig | None = None) -> Path:
    """Train the tokenizer on `texts`, make a random Llama, save both to `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = cfg or TinyConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(list(texts) + [SYSTEM_PROMPT], cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def train_tokenizer(texts: list[str], vocab_size: int):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits one by one, as in Llama/Qwen tokenizers: arithmetic stays learnable.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>",
        additional_special_tokens=SPECIAL_TOKENS[2:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast
