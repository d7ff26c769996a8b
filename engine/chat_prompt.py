"""Chat messages to a prompt, for the server's /v1/chat/completions and the offline LLM.chat.

A tokenizer with a chat template renders the conversation with it (then the text is tokenized
without adding special tokens again, as transformers' apply_chat_template and vLLM do). Otherwise
(the `tiny` model, the simulated server, model folders without a template) the messages are joined
in a plain, documented format: one line per message, `role: content`, then `assistant:` for the
model to continue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Messages = list[dict[str, str]]


def plain_chat_text(messages: Messages, add_generation_prompt: bool = True,
                    continue_final_message: bool = False) -> str:
    """The documented fallback for models without a chat template."""
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    if continue_final_message:
        return text[:-1]  # the last message goes on where it ends
    return text + "assistant:" if add_generation_prompt else text


def chat_prompt(tokenizer: Any, messages: Messages, add_generation_prompt: bool = True,
                continue_final_message: bool = False, chat_template: str | None = None,
                chat_template_kwargs: Mapping[str, Any] | None = None) -> tuple[str, list[int]]:
    """(prompt text, its token ids) for a conversation; ValueError for one that cannot be rendered.
    chat_template_kwargs: extra variables for the template (e.g. enable_thinking), as vLLM passes them."""
    if add_generation_prompt and continue_final_message:
        raise ValueError("add_generation_prompt and continue_final_message cannot both be set: the first starts "
                         "a new assistant message, the second continues the last one")
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        text = plain_chat_text(messages, add_generation_prompt, continue_final_message)
        return text, [int(t) for t in tokenizer.encode(text)]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         continue_final_message=continue_final_message, chat_template=chat_template,
                                         **dict(chat_template_kwargs or {}))
    return str(text), [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]


def conversation(messages: Sequence[Mapping[str, Any]]) -> Messages:
    """OpenAI-style messages as plain {"role", "content"} dicts: content as a string, or a list of
    {"type": "text", "text": ...} parts joined by newlines (as vLLM's "string" content format);
    anything else is a ValueError naming the message."""
    if not messages:
        raise ValueError("messages is empty: a conversation needs at least one message")
    out: Messages = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise ValueError(f"messages[{i}] must be a dict with a 'role' string, got {m!r}")
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                kind = part.get("type") if isinstance(part, Mapping) else None
                if kind != "text" or not isinstance(part.get("text"), str):
                    raise ValueError(f"messages[{i}] has a {kind!r} part; only text parts are supported")
                texts.append(part["text"])
            content = "\n".join(texts)  # vLLM's "string" content format
        elif content is not None and not isinstance(content, str):
            raise ValueError(f"messages[{i}]'s content must be a string or a list of text parts")
        out.append({"role": m["role"], "content": content or ""})
    return out
