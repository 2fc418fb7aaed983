"""Random-initialised Llama models of real shapes, built directly on the
device in the target dtype (no CPU init, no hub): the speed of a matmul does
not depend on what the weights have learned, so these measure honestly."""

from __future__ import annotations

from types import SimpleNamespace

SHAPES = {
    # Llama-3.1-8B / R1-Distill-Llama-8B, with llama3 rope scaling.
    "8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=14336, vocab_size=128256, max_position_embeddings=8192,
               rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192}),
    # SmolLM2-135M(-Instruct).
    "smol": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                 intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192,
                 rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
    # For a smoke run of the benchmark on CPU.
    "small": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=352, vocab_size=512, max_position_embeddings=2048),
}
EOS, PAD = 2, 0


def build_llama(shape: str, device: str, dtype_name: str = "bfloat16"):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dtype = getattr(torch, dtype_name)
    config = LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD,
                         tie_word_embeddings=False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def id_tokenizer():
    """What the generators need from a tokenizer to run on token ids: the EOS
    and pad ids, and a decode (the benchmarks read ids, not text)."""
    return SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD, decode=lambda ids, **_: "",
                           padding_side="left", pad=_pad_left)


def _pad_left(batch, return_tensors="pt"):
    """tokenizer.pad for transformers' generate on id prompts."""
    import torch
    from transformers import BatchEncoding

    rows = batch["input_ids"]
    width = max(map(len, rows))
    return BatchEncoding({"input_ids": torch.tensor([[PAD] * (width - len(r)) + list(r) for r in rows]),
                          "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])})


def matmul_params(model) -> int:
    """Parameters that take part in matmuls (all but the input embedding)."""
    embed = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - embed
