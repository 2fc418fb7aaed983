"""Runs the model over the paged KV cache: prefill chunks and decode steps
(one CUDA-graph replay each, sampling included). Both run the same pieces
(llama.py), compiled on a GPU, each from one layer's attention to the next;
in decode the attention kernel applies rope, in prefill the pieces do.

The cache is one tensor [layers, 2 (k, v), blocks, block_size, kv_heads,
head_dim], sized from free GPU memory (or `kv_cache_gib`), never from
rows x max length. A decode step reads fixed device buffers (`DecodeInputs`)
and writes the sampled token back into them and advances the positions, so
a round of several steps is several graph replays with no host sync
between them. One graph per batch bucket: rows are padded up to the next
bucket with rows that write to the reserved block 0 and attend to nothing.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any, NamedTuple, Optional

import torch

from looper_cli.engine.api import EngineConfig
from looper_cli.engine.attention import PrefillLayout, decode_attention, prefill_attention, write_kv
from looper_cli.engine.block_manager import TRASH_BLOCK
from looper_cli.engine.graphs import capture as capture_graph
from looper_cli.engine.llama import base_causal_lm, between_layers, compiled, last_layer, pre_attention
from looper_cli.engine.sampler import sample, token_salts
from looper_cli.engine.scheduler import Chunk
from looper_cli.engine.weights import EngineWeights
from looper_cli.engine.sequence import Sequence
from looper_cli.errors import UserError

# The cos/sin table and the decode block tables grow in steps of this many positions: a longer
# prompt than any before rarely changes their shape, which would re-capture every decode graph
# (a new table width; seconds each time, mid-run in ppo).
LENGTH_ALIGN = 1024
# Decode steps whose samples the decode buffers hold at once (a round of more reads them back in parts).
ROUND_COLUMNS = 32


def graph_buckets(max_seqs: int) -> list[int]:
    """Batch sizes with a captured graph: a few small ones, every 16 up to
    256, then every 32 (each graph costs a capture at startup)."""
    sizes = [1, 2, 4, 8] + list(range(16, 256, 16)) + list(range(256, max_seqs, 32))
    return [b for b in sizes if b < max_seqs] + [max_seqs]


class DecodeInputs:
    """What a decode step reads (and partly writes back), one row per sequence."""

    def __init__(self, rows: int, width: int, device: torch.device):
        def zeros(*shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        self.tokens = zeros(rows)  # fed this step; the sampled token replaces it
        self.positions = zeros(rows)  # of the fed token; +1 after the step
        self.limits = zeros(rows)  # last position a row may write; -1 for padding rows
        self.tables = zeros(rows, width, dtype=torch.int32)
        self.temperature = zeros(rows, dtype=torch.float32)
        self.top_p = zeros(rows, dtype=torch.float32)
        self.keys = zeros(rows)
        # What a round's steps sampled, a column each: the graph writes column `step` and advances it,
        # so a round copies nothing between replays (two copies a step took ~20 us of GPU time).
        self.step = zeros(1)
        self.sampled = zeros(rows, ROUND_COLUMNS)
        self.logprobs = zeros(rows, ROUND_COLUMNS, dtype=torch.float32)  # of the sampled tokens


class ModelRunner:
    def __init__(self, model: Any, config: EngineConfig):
        lm = base_causal_lm(model)
        cfg = lm.config
        self.config = config
        self.embed, self.layers = lm.model.embed_tokens, list(lm.model.layers)
        self.norm, self.head, self.rotary = lm.model.norm, lm.lm_head, lm.model.rotary_emb
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.hidden, self.intermediate = cfg.hidden_size, getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
        self.vocab = cfg.vocab_size
        self.scale = self.head_dim ** -0.5
        self.device, self.dtype = self.embed.weight.device, self.embed.weight.dtype
        self.block_size = config.block_size
        on_cuda = self.device.type == "cuda"
        self.use_graphs = on_cuda and not config.eager
        fast = on_cuda and not config.eager  # compiling costs seconds once; worth it only on a GPU
        pieces = Pieces(pre_attention, between_layers, last_layer, decode_addresses)
        # Compiled, decode graphs replay them and prefill runs them with a dynamic token count:
        # ~10 kernels a layer instead of ~40 launched one by one (prefill is host-bound).
        self.pieces = Pieces(*map(compiled, pieces)) if fast else pieces
        self._sample = compiled(sample) if fast else sample
        # Built now so that an adapter the engine cannot run fails before any generation.
        self.weights: Optional[EngineWeights] = EngineWeights(self.layers)
        self.salts = token_salts(self.vocab, self.device)
        self.cache: Optional[torch.Tensor] = None
        self.cos = self.sin = None
        self.inputs: Optional[DecodeInputs] = None
        self.graphs: dict[tuple[int, bool], tuple[Any, ...]] = {}
        self.pool = None

    def called_modules(self) -> list[Any]:
        """The model's modules a forward pass here calls (their forward):
        the embeddings, norms, activations, final norm and lm_head. The
        projections are read as weights (weights.py), never called."""
        per_layer = [m for layer in self.layers for m in (layer.input_layernorm, layer.post_attention_layernorm,
                                                          layer.mlp.act_fn)]
        return [self.embed, *per_layer, self.norm, self.head, self.rotary]

    # -- memory ---------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return 0 if self.cache is None else self.cache.shape[2]

    @property
    def block_bytes(self) -> int:
        element = torch.tensor([], dtype=self.dtype).element_size()
        return 2 * len(self.layers) * self.block_size * self.kv_heads * self.head_dim * element

    def prepare(self, max_len: int) -> None:
        """Make the cache, the rope table and the decode buffers ready for
        sequences of up to `max_len` tokens, and the weights current."""
        if self.weights is None:
            self.weights = EngineWeights(self.layers)
        self.weights.refresh()  # before the cache is sized: merged LoRA copies take memory
        wanted = self._wanted_blocks(_aligned(max_len))  # a new cache drops every graph: grow it seldom
        if self.cache is None or self.num_blocks < wanted:
            blocks = min(wanted, self._affordable_blocks())
            if self.cache is None or blocks > self.num_blocks:
                self._allocate_cache(blocks)
        width = -(-_aligned(max_len) // self.block_size)
        if self.inputs is None or self.inputs.tables.shape[1] < width:
            self._drop_graphs()
            self.inputs = DecodeInputs(self.config.max_seqs, width, self.device)
        if self.cos is None or self.cos.shape[0] < max_len:
            self._build_rope(_aligned(max_len))

    def release(self) -> None:
        """Free the cache, graphs, buffers and merged LoRA copies (the next
        `prepare` makes them again)."""
        self._drop_graphs()
        self.cache = self.cos = self.sin = None
        self.inputs = self.weights = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _wanted_blocks(self, max_len: int) -> int:
        """Never more than every row at full length needs (plus the reserved block)."""
        per_sequence = -(-max_len // self.block_size)
        return self.config.num_blocks or 1 + self.config.max_seqs * per_sequence

    def _affordable_blocks(self) -> int:
        if self.config.num_blocks:
            return self.config.num_blocks
        if self.config.kv_cache_gib is not None:
            return int(self.config.kv_cache_gib * 2**30 // self.block_bytes)
        if self.device.type != "cuda":
            return 1 << 62  # CPU: what the rows need (the wanted blocks)
        held = self.cache.numel() * self.cache.element_size() if self.cache is not None else 0
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        budget = total * self.config.gpu_memory_utilization - (total - free - held) - self._working_bytes()
        return max(0, int(budget // self.block_bytes))

    def _working_bytes(self) -> int:
        """An estimate of what one round needs besides the cache: a prefill
        chunk's activations, and the logits and sampling temporaries of
        every row (about 40 bytes per row and vocabulary entry), plus 1 GiB."""
        element = torch.tensor([], dtype=self.dtype).element_size()
        width = 4 * self.hidden + 3 * self.intermediate + (self.heads + 2 * self.kv_heads) * self.head_dim
        prefill = 2 * self.config.max_batched_tokens * width * element
        return prefill + 40 * self.config.max_seqs * self.vocab + 2**30

    def _allocate_cache(self, blocks: int) -> None:
        if blocks < 2:
            raise UserError(self._no_room_message(blocks))
        self._drop_graphs()
        self.cache = None
        shape = (len(self.layers), 2, blocks, self.block_size, self.kv_heads, self.head_dim)
        try:
            # Zeros, not empty: attention reads masked slots of partly filled
            # blocks, and a NaN left in fresh memory would survive the mask.
            self.cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        except torch.OutOfMemoryError:
            raise UserError(f"the KV cache of {blocks} blocks ({blocks * self.block_bytes / 2**30:.1f} GiB) "
                            "does not fit; lower --gpu-memory-utilization or --kv-cache-gib") from None

    def _no_room_message(self, affordable: int) -> str:
        return (f"no room for a KV cache: {affordable} block(s) of {self.block_bytes / 2**20:.1f} MiB fit "
                "beside the model; raise --gpu-memory-utilization or --kv-cache-gib, or lower the sequences in "
                "flight (--batch-size; --max-seqs in ppo)")

    def _build_rope(self, length: int) -> None:
        """cos/sin for every position once, from the model's own rotary module
        (llama3 / linear rope scaling included); steps index the table."""
        positions = torch.arange(length, device=self.device)[None]
        probe = torch.zeros(1, 1, self.head_dim, dtype=self.dtype, device=self.device)
        cos, sin = self.rotary(probe, positions)
        self.cos, self.sin = cos[0], sin[0]

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Copy-on-write: each (source, destination) block, every layer, k and v."""
        if copies:
            src = torch.tensor([s for s, _ in copies], device=self.device)
            dst = torch.tensor([d for _, d in copies], device=self.device)
            self.cache.index_copy_(2, dst, self.cache.index_select(2, src))

    # -- prefill --------------------------------------------------------
    def prefill(self, chunks: list[Chunk]) -> torch.Tensor:
        """Run the chunks' tokens, write their KV, and return float32 logits
        [chunks that complete their sequence, vocab] of each one's last token."""
        ids, positions, slots = [], [], []
        for chunk in chunks:
            seq, span = chunk.seq, range(chunk.start, chunk.start + chunk.length)
            ids += seq.token_ids[chunk.start:chunk.start + chunk.length]
            positions += span
            slots += [self._slot(seq, p) for p in span]
        device = self.device
        ids_t = torch.tensor(ids, device=device)
        pos_t = torch.tensor(positions, device=device)
        slots_t = torch.tensor(slots, device=device)
        tables = self._tables([c.seq for c in chunks])
        starts, lengths = [c.start for c in chunks], [c.length for c in chunks]
        layout = PrefillLayout(starts, lengths, device)
        cos, sin = self.cos[pos_t][:, None], self.sin[pos_t][:, None]

        def attend(n: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            cache_k, cache_v = self.cache[n, 0], self.cache[n, 1]
            write_kv(cache_k, cache_v, slots_t, k, v)
            return prefill_attention(q, k, v, cache_k, cache_v, tables, layout, self.scale)

        hidden = self._layers(self.pieces, self.embed(ids_t), cos, sin, attend, dynamic_tokens=True)
        ends = torch.tensor([end - 1 for end, c in zip(accumulate(lengths), chunks) if c.completes],
                            device=device, dtype=torch.long)
        return self.head(hidden[ends]).float()

    def _layers(self, pieces: "Pieces", x: torch.Tensor, cos: Optional[torch.Tensor], sin: Optional[torch.Tensor],
                attend: Any, dynamic_tokens: bool = False) -> torch.Tensor:
        """Every decoder layer, with `attend(n, q, k, v)` as layer n's
        attention (which also stores k, v); returns the final-normed hidden
        states. Each piece runs from one attention to the next, and rotates
        q and k unless cos/sin are None (then `attend` does).
        `dynamic_tokens` (prefill): the pieces are compiled for any token
        count from their first call. Else the second count seen recompiles
        them, 3 s inside ppo's second step (run 18); decode graphs do not
        warm this up, as they call the pieces without cos/sin."""
        def tokens_vary(*tensors: Optional[torch.Tensor]) -> None:
            for tensor in tensors:
                if dynamic_tokens and tensor is not None:
                    torch._dynamo.maybe_mark_dynamic(tensor, 0)

        dims = (self.heads, self.kv_heads, self.head_dim)
        tokens_vary(x, cos, sin)
        q, k, v = pieces.pre(self.layers[0].input_layernorm, x, self.weights.layers[0].qkv, cos, sin, *dims)
        last = len(self.layers) - 1
        for n in range(last):
            attn = attend(n, q, k, v)
            tokens_vary(x, attn)
            finish = self._finish_args(n, x, attn)
            x, q, k, v = pieces.between(finish, self.layers[n + 1].input_layernorm, self.weights.layers[n + 1].qkv,
                                        cos, sin, *dims)
        attn = attend(last, q, k, v)
        tokens_vary(x, attn)
        return pieces.last(self._finish_args(last, x, attn), self.norm)

    def _finish_args(self, n: int, x: torch.Tensor, attn: torch.Tensor) -> tuple[Any, ...]:
        layer, w = self.layers[n], self.weights.layers[n]
        return (layer.post_attention_layernorm, layer.mlp.act_fn, x, attn, w.o, w.gate_up, w.down)

    def _slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size

    def _tables(self, seqs: list[Sequence]) -> torch.Tensor:
        width = max(len(s.block_table) for s in seqs)
        rows = [s.block_table + [TRASH_BLOCK] * (width - len(s.block_table)) for s in seqs]
        return torch.tensor(rows, dtype=torch.int32, device=self.device)

    def sample_rows(self, logits: torch.Tensor, seqs: list[Sequence]) -> tuple[list[int], list[float]]:
        """One next token per sequence (its own settings) from its row of logits."""
        def column(values: list[Any], dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=self.device)

        tokens, logprobs = self._sample(
            logits, column([s.settings.temperature for s in seqs], torch.float32),
            column([s.settings.top_p for s in seqs], torch.float32),
            column([s.settings.noise_key for s in seqs], torch.long),
            column([len(s.token_ids) - 1 for s in seqs], torch.long), self.salts, _uses_top_p(seqs))
        return tokens.tolist(), logprobs.tolist()

    # -- decode ---------------------------------------------------------
    def decode(self, seqs: list[Sequence], steps: int) -> tuple[list[list[int]], list[list[float]]]:
        """`steps` decode steps of every sequence: the tokens sampled at each
        step [rows][steps] and their log-probs. Rows keep running after EOS
        or their last position inside the round; the caller cuts them."""
        rows = len(seqs)
        bucket = self.bucket_for(rows)
        top_p = _uses_top_p(seqs)
        inputs = self.inputs
        tokens, logprobs = [[] for _ in range(rows)], [[] for _ in range(rows)]
        self._fill_inputs(seqs, bucket)
        # In parts of ROUND_COLUMNS steps: after a whole part the graph's column has wrapped back to 0.
        for start in range(0, steps, ROUND_COLUMNS):
            count = min(ROUND_COLUMNS, steps - start)
            for _ in range(count):
                self._run_step(bucket, top_p)
            for row, (ids, values) in enumerate(zip(inputs.sampled[:rows, :count].tolist(),
                                                    inputs.logprobs[:rows, :count].tolist())):
                tokens[row] += ids
                logprobs[row] += values
        return tokens, logprobs

    def bucket_for(self, rows: int) -> int:
        """The graph batch size that runs `rows` rows (the rest is padding)."""
        return next(b for b in graph_buckets(self.config.max_seqs) if b >= rows)

    def _fill_inputs(self, seqs: list[Sequence], bucket: int) -> None:
        """Rows [0, len(seqs)) for the sequences, the rest of the bucket padding."""
        import numpy as np

        inputs = self.inputs
        columns = np.zeros((6, bucket), dtype=np.float64)
        columns[2] = -1  # padding rows write nowhere
        columns[4] = 1.0
        tables = np.zeros((bucket, inputs.tables.shape[1]), dtype=np.int32)
        for row, seq in enumerate(seqs):
            settings = seq.settings
            columns[:, row] = (seq.token_ids[-1], seq.num_computed, seq.last_writable_position,
                               settings.temperature, settings.top_p, settings.noise_key)
            tables[row, :len(seq.block_table)] = seq.block_table
        buffers = (inputs.tokens, inputs.positions, inputs.limits, inputs.temperature, inputs.top_p, inputs.keys)
        for buffer, column in zip(buffers, columns):
            buffer[:bucket].copy_(torch.from_numpy(column).to(buffer.dtype))
        inputs.tables[:bucket].copy_(torch.from_numpy(tables))
        inputs.step.zero_()

    def capture_all(self, top_p: bool = False) -> None:
        """Capture every bucket's graph now (startup), not when a round first
        needs it. Padding rows only: they write to block 0 and attend to nothing."""
        if not self.use_graphs:
            return
        for bucket in graph_buckets(self.config.max_seqs):
            if (bucket, top_p) not in self.graphs:
                self._fill_inputs([], bucket)
                self.graphs[(bucket, top_p)] = self._capture(bucket, top_p)

    def _run_step(self, bucket: int, top_p: bool) -> None:
        if not self.use_graphs:
            self._decode_step(bucket, top_p)
            return
        key = (bucket, top_p)
        if key not in self.graphs:
            self.graphs[key] = self._capture(bucket, top_p)
        self.graphs[key].replay()

    def _decode_step(self, rows: int, top_p: bool) -> None:
        """One token for `rows` rows, in place on the DecodeInputs buffers."""
        inputs, pieces = self.inputs, self.pieces
        positions, tables = inputs.positions[:rows], inputs.tables[:rows]
        slots, context, cos, sin = pieces.addresses(positions, inputs.limits[:rows], tables, self.cos, self.sin,
                                                    self.block_size)

        def attend(n: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return decode_attention(q, k, v, self.cache[n, 0], self.cache[n, 1], slots, tables, context, self.scale,
                                    rope=(cos, sin))

        # No cos/sin for the pieces: the attention kernel applies rope (one kernel a layer fewer).
        # The head's own dtype: the sampler reads it as float32 (a float32 copy of the logits took 8 us a step).
        logits = self.head(self._layers(pieces, self.embed(inputs.tokens[:rows]), None, None, attend))
        token, logprob = self._sample(logits, inputs.temperature[:rows], inputs.top_p[:rows],
                                      inputs.keys[:rows], positions, self.salts, top_p)
        inputs.tokens[:rows].copy_(token)
        inputs.sampled[:rows].index_copy_(1, inputs.step, token[:, None])
        inputs.logprobs[:rows].index_copy_(1, inputs.step, logprob[:, None])
        inputs.step.add_(1).remainder_(ROUND_COLUMNS)  # replays past a round's columns wrap, never write out of bounds
        inputs.positions[:rows].add_(1)

    def _capture(self, rows: int, top_p: bool) -> Any:
        """A decode step's graph. The warm-up writes this step's KV at this
        step's slots (the values the replay writes too); the buffers it
        advances are put back before the capture."""
        inputs = self.inputs
        advanced = (inputs.tokens, inputs.positions, inputs.step)
        saved = [t.clone() for t in advanced]

        def restore() -> None:
            for buffer, value in zip(advanced, saved):
                buffer.copy_(value)

        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        return capture_graph(lambda: self._decode_step(rows, top_p), self.pool, restore)

    def _drop_graphs(self) -> None:
        """Graphs hold the addresses of the cache and buffers they were
        captured on: when those are reallocated the graphs (and their memory
        pool: capturing into a pool whose graphs are gone trips an allocator
        assert, seen on an H100) go too."""
        self.graphs.clear()
        self.pool = None


class Pieces(NamedTuple):
    """The functions a forward pass is cut into (llama.py), eager or compiled."""

    pre: Any
    between: Any
    last: Any
    addresses: Any


def decode_addresses(positions: torch.Tensor, limits: torch.Tensor, tables: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor, block_size: int):
    """Where each decode row writes and what it sees: its cache slot (the
    reserved slot 0 for a row past its last position, and for padding), its
    context length (0 for padding) and its rope cos/sin [rows, 1, d]."""
    writes = positions <= limits
    at = torch.minimum(positions, limits).clamp(min=0)
    block = tables.gather(1, (at // block_size)[:, None]).squeeze(1).long()
    slots = torch.where(writes, block * block_size + at % block_size, torch.zeros_like(block))
    context = torch.where(limits >= 0, at + 1, torch.zeros_like(at)).to(torch.int32)
    return slots, context, cos[at][:, None], sin[at][:, None]


def _aligned(length: int) -> int:
    return -(-length // LENGTH_ALIGN) * LENGTH_ALIGN


def _uses_top_p(seqs: list[Sequence]) -> bool:
    return any(s.settings.temperature > 0 and s.settings.top_p < 1 for s in seqs)
