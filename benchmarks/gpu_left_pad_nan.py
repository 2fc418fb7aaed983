"""GPU check: do left-padded batches give NaN logits under each attention
implementation? HF `generate` (what TRL's GRPO samples with) left-pads the
prompts, so the pad positions' attention rows are fully masked; a kernel that
returns NaN for such a row poisons the cache, and sampling then fails with
"probability tensor contains either inf, nan or element < 0" (seen in
`looper ppo` on an H200 with SmolLM2-135M, bf16, sdpa).

Random-init model of the SmolLM2-135M shape, bf16, on the GPU: a prefill of 64
left-padded prompts, then 8 cached decode steps; counts rows with NaN logits.

    python3 benchmarks/gpu_left_pad_nan.py
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
             num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)


def nan_rows(model, ids, mask) -> tuple[int, int]:
    """(rows with NaN logits after the prefill, after 8 cached greedy steps)."""
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        first = int(out.logits[:, -1].isnan().any(-1).sum())
        past, token = out.past_key_values, out.logits[:, -1].nan_to_num().argmax(-1, keepdim=True)
        for _ in range(8):
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = model(input_ids=token, attention_mask=mask, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1].nan_to_num().argmax(-1, keepdim=True)
        return first, int(out.logits[:, -1].isnan().any(-1).sum())


def main() -> None:
    torch.manual_seed(0)
    lengths = torch.randint(20, 160, (64,))
    width = int(lengths.max())
    ids = torch.randint(10, SHAPE["vocab_size"], (64, width), device="cuda")
    mask = (torch.arange(width)[None, :] >= width - lengths[:, None]).long().cuda()  # left padding
    model = LlamaForCausalLM(LlamaConfig(**SHAPE)).to("cuda", torch.bfloat16).eval()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; rows with NaN logits of 64 "
          f"(prefill, after 8 decode steps):")
    for name in ("sdpa", "eager"):
        model.set_attn_implementation(name)
        print(f"  {name:22} {nan_rows(model, ids, mask)}")
    model.set_attn_implementation("sdpa")
    for backend in ("cudnn", "efficient", "math"):
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            chosen = {"cudnn": SDPBackend.CUDNN_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                      "math": SDPBackend.MATH}[backend]
            with sdpa_kernel([chosen]):
                print(f"  sdpa[{backend}]{'':{12 - len(backend)}} {nan_rows(model, ids, mask)}")
        except RuntimeError as error:
            print(f"  sdpa[{backend}]: not usable here ({str(error).splitlines()[0][:80]})")


if __name__ == "__main__":
    main()
