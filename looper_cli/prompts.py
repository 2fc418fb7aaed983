"""Prompt templates: tutoring-style chat (through the tokenizer's chat
template) and plain text. SFT, rollouts and eval all build prompts here, so
a model is always asked the same way it was taught."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

Template = Literal["chat", "plain"]
TEMPLATES: tuple[Template, ...] = ("chat", "plain")
DEFAULT_TEMPLATE: Template = "chat"

SYSTEM_PROMPT = (
    "You are a patient math tutor. Solve the problem step by step, showing each "
    "calculation, then give the final answer on its own line as '#### <number>'."
)


def build_prompt(tokenizer: Any, question: str, template: Optional[Template] = DEFAULT_TEMPLATE) -> str:
    """The text the model continues. For `chat` (also None: not chosen), the
    tokenizer's template with the generation prompt; for `plain`, a
    Question/Answer frame."""
    if template == "plain":
        return f"Question: {question.strip()}\nAnswer:"
    messages = chat_messages(question)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template; use --template plain")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_messages(question: str, answer: str | None = None) -> list[dict[str, str]]:
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question.strip()},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer.strip()})
    return messages


def completion_target(answer: str, template: Optional[Template] = DEFAULT_TEMPLATE,
                      eos_token: str | None = None) -> str:
    """What the model learns to write after the prompt (the SFT label)."""
    text = " " + answer.strip() if template == "plain" else answer.strip()
    return text + (eos_token or "")


def recorded_template(folder: Any) -> Optional[Template]:
    """The template a looper output folder (an adapter or a full model from
    sft, dpo, ppo) was trained with, from the config.toml saved beside it;
    None for any other folder, a hub id or a file."""
    from looper_cli.config import RESOLVED_CONFIG_NAME, load_toml
    from looper_cli.errors import UserError

    if folder is None or not (Path(str(folder)) / RESOLVED_CONFIG_NAME).is_file():
        return None
    try:
        tables = load_toml(Path(str(folder)) / RESOLVED_CONFIG_NAME)
    except UserError:
        return None  # not ours to judge: the folder's own loader reports a broken file
    found = [t.get("template") for t in tables.values() if isinstance(t, dict)]
    return next((t for t in found if t in TEMPLATES), None)


def resolve_template(given: Optional[str], *trained_from: Any) -> Template:
    """The template the user gave, else the one the first of `trained_from`
    (the adapter or model being used) was trained with, else chat: a model is
    asked the way it was taught unless the user says otherwise."""
    if given is not None:
        return given  # type: ignore[return-value]  # config.resolve checked it is chat or plain
    return next((t for t in map(recorded_template, trained_from) if t is not None), DEFAULT_TEMPLATE)
