"""Loading models and tokenizers: a hub id, a local folder, or a `.gguf`
file; LoRA adapters from a folder. bf16 on GPU, fp32 on CPU.

Every stage loads through here, so "an adapter made for another base model"
or "a path that does not exist" fails the same clear way everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from looper_cli.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"
# Written beside every adapter looper trains: what its base model was (name,
# shape, a sample of the input embeddings), so that an adapter put on another
# model is refused instead of producing garbage or an IndexError.
BASE_RECORD_NAME = "looper_base.json"
SHAPE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "intermediate_size")
EMBEDDING_SAMPLE_COLUMNS = 8


@dataclass
class ModelSource:
    """Where weights come from: `path_or_id` plus, for GGUF, the file name."""

    path_or_id: str
    gguf_file: str | None = None

    @classmethod
    def parse(cls, spec: str | Path) -> "ModelSource":
        text = str(spec)
        path = Path(text).expanduser()
        if text.endswith(".gguf"):
            if not path.is_file():
                raise UserError(f"model file not found: {path}")
            return cls(str(path.parent), path.name)
        if path.exists():
            if not path.is_dir():
                raise UserError(f"model path is not a folder or a .gguf file: {path}")
            if not (path / "config.json").is_file() and not is_adapter_dir(path):
                raise UserError(f"no config.json in model folder {path}")
            return cls(str(path))
        if text.startswith((".", "/", "~")) or text.count("/") > 1:
            raise UserError(f"model not found: {text}")
        return cls(text)  # a hub id: transformers resolves it (and fails clearly offline)

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def absolute_if_local(spec: str | Path) -> str:
    """A local model path made absolute (a hub id is left as it is), so that
    adapter configs and run records find it from any working directory."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else str(spec)


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str | None:
    """The base model an adapter folder says it was trained on."""
    cfg = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    return cfg.get("base_model_name_or_path")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> Any:
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_tokenizer(source: str | Path, padding_side: str = "left") -> Any:
    from transformers import AutoTokenizer

    src = source if isinstance(source, ModelSource) else ModelSource.parse(source)
    try:
        tok = AutoTokenizer.from_pretrained(src.path_or_id, **src.kwargs())
    except OSError as err:
        raise UserError(f"could not load tokenizer from {src.path_or_id}: {_first_line(err)}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_base_model(source: str | Path, device: str | None = None, dtype: Any = None) -> Any:
    from transformers import AutoModelForCausalLM

    src = source if isinstance(source, ModelSource) else ModelSource.parse(source)
    device = device or default_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src.path_or_id, dtype=dtype or default_dtype(device), **src.kwargs()
        )
    except OSError as err:
        raise UserError(f"could not load model {src.path_or_id}: {_first_line(err)}") from None
    if src.gguf_file:
        # Adapters record their base by this name: make it the .gguf file
        # itself, so `adapter_base()` points at something loadable.
        model.name_or_path = model.config._name_or_path = str(Path(src.path_or_id) / src.gguf_file)
        _forget_gguf_quantization(model)
    return model.to(device)  # type: ignore[arg-type]  # transformers stub types .to oddly


def _forget_gguf_quantization(model: Any) -> None:
    """transformers de-quantizes GGUF weights on load but keeps the model
    flagged as quantized, which makes Trainer refuse to train it. The weights
    in memory are plain tensors, so drop the flag (and the saved config entry,
    so merged checkpoints load as ordinary models)."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def load_model(base: str | Path, adapter: str | Path | None = None, device: str | None = None,
               dtype: Any = None, trainable: bool = False) -> Any:
    """The base model, with the adapter on top when one is given."""
    model = load_base_model(base, device, dtype)
    if adapter is None:
        return model
    return attach_adapter(model, adapter, trainable=trainable)


def attach_adapter(model: Any, adapter: str | Path, trainable: bool = False,
                   adapter_name: str = "default") -> Any:
    from peft import PeftModel

    path = Path(adapter)
    if not is_adapter_dir(path):
        raise UserError(f"no LoRA adapter ({ADAPTER_CONFIG}) in {path}")
    check_adapter_fits(model, path)
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=trainable,
                                         adapter_name=adapter_name)
    except (RuntimeError, ValueError, KeyError) as err:
        raise UserError(
            f"adapter {path} does not fit base model {model.config.name_or_path} "
            f"(it was made for {adapter_base(path)}): {_first_line(err)}"
        ) from None


def base_identity(model: Any) -> dict[str, Any]:
    """What an adapter trained on `model` needs its base to be: the shape of
    the model and a few of its input-embedding values (which LoRA never
    changes), so a model of the same shape with other weights is told apart."""
    config = model.config
    weight = model.get_input_embeddings().weight
    shape = {key: getattr(config, key, None) for key in SHAPE_KEYS}
    shape["embedding_rows"] = int(weight.shape[0])
    n = int(weight.shape[0])
    rows = sorted({n // 3, n // 2, n - 1})  # not row 0: often padding, all zeros
    sample = weight.detach()[rows, :EMBEDDING_SAMPLE_COLUMNS].float().flatten().tolist()
    return {"name": str(getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "")),
            "shape": shape, "embedding_sample": [round(x, 7) for x in sample]}


def save_base_record(out_dir: str | Path, identity: dict[str, Any]) -> None:
    from looper_cli.jsonl import atomic_write_json

    if is_adapter_dir(out_dir):  # a full model is its own base: nothing to check later
        atomic_write_json(Path(out_dir) / BASE_RECORD_NAME, identity)


def check_adapter_shape(base: str, adapter: str | Path) -> None:
    """Before any weights load (rollout checks this before its workers
    start): the adapter's recorded base shape against the base's config."""
    from transformers import AutoConfig

    record = _base_record(Path(adapter))
    if record is None:
        return
    src = ModelSource.parse(base)
    try:
        config = AutoConfig.from_pretrained(src.path_or_id, **src.kwargs())
    except (OSError, ValueError):
        return  # not readable without loading: the full check runs when the model loads
    differs = [f"{k} {record['shape'].get(k)} vs {getattr(config, k, None)}" for k in SHAPE_KEYS
               if record["shape"].get(k) != getattr(config, k, None)]
    if differs:
        _refuse_adapter(Path(adapter), base, record, differs)


def _base_record(adapter: Path) -> dict[str, Any] | None:
    path = adapter / BASE_RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if isinstance(record, dict) and isinstance(record.get("shape"), dict):
            return record
    except (OSError, json.JSONDecodeError):
        pass
    raise UserError(f"{path} is damaged; it records the base model {adapter} was trained on")


def _refuse_adapter(adapter: Path, base: str, record: dict[str, Any], differs: list[str]) -> None:
    raise UserError(f"adapter {adapter} does not fit base model {base}: it was trained on "
                    f"{record.get('name')} ({'; '.join(differs[:3])}); pass that model as --base-model")


def check_adapter_fits(model: Any, adapter: Path) -> None:
    """Refuse an adapter whose recorded base differs from `model` in shape or
    weights. An adapter without a record (made elsewhere) is checked for the
    one mismatch that always breaks: a tokenizer larger than the embeddings."""
    record = _base_record(adapter)
    if record is None:
        _check_tokenizer_fits(model, adapter)
        return
    mine = base_identity(model)
    differs = [f"{k} {record['shape'].get(k)} vs {v}" for k, v in mine["shape"].items()
               if record["shape"].get(k) != v]
    if not differs and not _same_values(record.get("embedding_sample", []), mine["embedding_sample"]):
        differs = ["same shape, other weights"]
    if differs:
        _refuse_adapter(adapter, mine["name"], record, differs)


def _same_values(a: list[float], b: list[float]) -> bool:
    """Equal up to bf16 rounding (a base loaded in bf16 on GPU, fp32 on CPU)."""
    return len(a) == len(b) and all(abs(x - y) <= 1e-3 + 1e-2 * abs(x) for x, y in zip(a, b))


def _check_tokenizer_fits(model: Any, adapter: Path) -> None:
    if not any((adapter / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        return
    rows = int(model.get_input_embeddings().weight.shape[0])
    size = len(load_tokenizer(adapter))
    if size > rows:
        raise UserError(f"adapter {adapter} does not fit base model {model.config.name_or_path}: its tokenizer "
                        f"has {size} tokens, the model's embeddings {rows}")


def resolve_checkpoint(checkpoint: str | Path, base_model: str | None = None) -> tuple[str, str | None]:
    """(base, adapter) for a checkpoint that is either a full model folder or
    an adapter folder (whose base is read from its config unless given)."""
    path = Path(checkpoint)
    if is_adapter_dir(path):
        base = base_model or adapter_base(path)
        if not base:
            raise UserError(f"adapter {path} names no base model; pass --base-model")
        return str(base), str(path)
    return str(checkpoint), None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
