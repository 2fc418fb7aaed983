"""Stage configuration: defaults, then an optional TOML file, then the command line.

Each stage has a dataclass (fields = options). `resolve` merges the three
sources (the command line wins), checks keys and types, and `save_resolved`
writes the result next to the stage's output as TOML, so a run can be
reproduced with `looper <stage> --config <that file>`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from looper_cli.errors import UserError
from looper_cli.jsonl import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

C = TypeVar("C")

RESOLVED_CONFIG_NAME = "config.toml"
# Every [table] a config file may hold, and the dataclass that defines its keys
# (imported only when a file is checked: the stage modules import torch lazily).
SECTIONS: dict[str, str] = {
    "pipeline": "looper_cli.pipeline:PipelineConfig",
    "sft": "looper_cli.sft:SFTStageConfig",
    "rollout": "looper_cli.rollout:RolloutStageConfig",
    "score": "looper_cli.rollout:ScoreStageConfig",
    "prefs": "looper_cli.prefs:PrefsStageConfig",
    "dpo": "looper_cli.dpo:DPOStageConfig",
    "ppo": "looper_cli.ppo:PPOStageConfig",
    "merge": "looper_cli.merge:MergeStageConfig",
    "eval": "looper_cli.evaluate:EvalStageConfig",
    "compare": "looper_cli.compare:CompareStageConfig",
}


def load_toml(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8-sig"))  # an editor's byte-order mark is fine
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"config file {p} is not valid TOML: {err}") from None


def resolve(cls: type[C], section: str, config_file: str | Path | None, **cli: Any) -> C:
    """Build `cls` from its defaults, the `[section]` of the TOML file (plus
    top-level keys that are fields of `cls`), and the non-None CLI values."""
    table = load_toml(config_file)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    check_known_names(table, config_file, extra_keys=set(fields))
    values: dict[str, Any] = {k: v for k, v in table.items() if k in fields and not isinstance(v, dict)}
    stage_table = table.get(section, {})
    if not isinstance(stage_table, dict):
        raise UserError(f"[{section}] in {config_file} must be a table")
    unknown = sorted(set(stage_table) - set(fields))
    if unknown:
        raise UserError(f"unknown option(s) in [{section}] of {config_file}: {', '.join(unknown)}"
                        f"{_did_you_mean(unknown[0], fields)}")
    values.update(stage_table)
    values.update({k: v for k, v in cli.items() if v is not None})
    hints = typing.get_type_hints(cls)
    coerced = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
    return cls(**coerced)


def check_known_names(table: dict[str, Any], config_file: Any, extra_keys: typing.Iterable[str] = ()) -> None:
    """A misspelled [table] or top-level key would be ignored, and the run
    would silently use defaults (the built-in tiny model instead of the one
    named): both are errors, with the closest known name."""
    import importlib

    sections = {name: importlib.import_module(spec.split(":")[0]).__dict__[spec.split(":")[1]]
                for name, spec in SECTIONS.items()}
    known_keys = set(extra_keys).union(*({f.name for f in dataclasses.fields(c)} for c in sections.values()))
    for name, value in table.items():
        if isinstance(value, dict) and name not in sections:
            raise UserError(f"unknown table [{name}] in {config_file}{_did_you_mean(name, sections)}")
        if not isinstance(value, dict) and name not in known_keys:
            raise UserError(f"unknown top-level key '{name}' in {config_file}{_did_you_mean(name, known_keys)}")


def _did_you_mean(name: str, known: Any) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check a TOML/CLI value against the field's type, converting where TOML
    has no native form (paths)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        return [_coerce(name, v, args[0]) for v in value] if args else list(value)
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"option {name} must be one of {', '.join(map(str, args))}, not {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"option {name} must be true or false, not {value!r}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise UserError(f"option {name} must be a number, not {value!r}")
        try:
            return hint(value) if hint is float or float(value).is_integer() else _bad_int(name, value)
        except ValueError:
            raise UserError(f"option {name} must be a number, not {value!r}") from None
    if hint is Path:
        return Path(value)
    if hint is str:
        return str(value)
    return value


def _bad_int(name: str, value: Any) -> Any:
    raise UserError(f"option {name} must be a whole number, not {value!r}")


def as_dict(cfg: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def save_resolved(cfg: Any, section: str, out_dir: str | Path, name: str = RESOLVED_CONFIG_NAME) -> Path:
    """Write the resolved config as `[section]` TOML next to the output
    (`name` lets file outputs sharing a folder keep one each: rollouts.config.toml)."""
    out = Path(out_dir) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, to_toml({section: as_dict(cfg)}))
    return out


def changed_keys(recorded: dict[str, Any], current: dict[str, Any], keys: typing.Iterable[str]) -> list[str]:
    """The keys whose values differ between a recorded config (TOML or JSON,
    where None is left out and paths are text) and the current one."""
    return [k for k in keys if _comparable(recorded.get(k)) != _comparable(current.get(k))]


def _comparable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


def config_fingerprint(cfg: Any) -> str:
    """A stable text of the config, for 'has this stage's config changed?'."""
    return json.dumps(as_dict(cfg), sort_keys=True)


def to_toml(tables: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string
