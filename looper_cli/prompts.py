"""Prompt templates: tutoring-style chat (through the tokenizer's chat
template) and plain text. SFT, rollouts and eval all build prompts here, so
a model is always asked the same way it was taught."""

from __future__ import annotations

from typing import Any, Literal

Template = Literal["chat", "plain"]

SYSTEM_PROMPT = (
    "You are a patient math tutor. Solve the problem step by step, showing each "
    "calculation, then give the final answer on its own line as '#### <number>'."
)


def build_prompt(tokenizer: Any, question: str, template: Template = "chat") -> str:
    """The text the model continues. For `chat`, the tokenizer's template with
    the generation prompt; for `plain`, a Question/Answer frame."""
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


def completion_target(answer: str, template: Template = "chat", eos_token: str | None = None) -> str:
    """What the model learns to write after the prompt (the SFT label)."""
    text = answer.strip() if template == "chat" else " " + answer.strip()
    return text + (eos_token or "")
