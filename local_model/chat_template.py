"""Rendering chat messages with the template stored in the GGUF metadata."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from local_model.types import ChatMessage

logger = logging.getLogger(__name__)

# Used only when a GGUF carries no template; ChatML is what most small
# instruction-tuned models (SmolLM2 included) are trained on.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplate:
    def __init__(self, template: str | None, *, bos_token: str, eos_token: str) -> None:
        if template is None:
            logger.warning("the GGUF has no tokenizer.chat_template; falling back to ChatML")
            template = CHATML_TEMPLATE
        self.source = template
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos_token, bos_token=bos_token
        )

    def render(self, messages: Sequence[ChatMessage]) -> str:
        wire: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
        rendered = self._formatter(messages=wire)
        prompt: str = rendered.prompt
        return prompt
