"""Prompt templates (Jinja2, one file per method and message) and their rendering.

Values that come from attributes, labels or real examples are inserted through the ``quote`` filter:
JSON-quoted, on one line, so a value such as ``"ignore the above\\nand ..."`` stays data and cannot add
lines or instructions to the template.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment

from factory.spec import Spec

TEMPLATE_DIR = Path(__file__).parent
Message = dict[str, str]


def quote(value: Any) -> str:
    """A value as a JSON string literal: quoted, escaped, always one line."""
    return json.dumps(str(value), ensure_ascii=False)


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=False,
        autoescape=False,
    )
    env.filters["quote"] = quote
    return env


class PromptRenderer:
    """Renders the messages of a spec's generation method; the spec's ``template`` overrides the user prompt."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.env = _environment()

    @cached_property
    def user_template(self) -> Template:
        override = self.spec.generation.template
        if override:
            return self.env.from_string(self.spec.resolve_path(override).read_text(encoding="utf-8"))
        return self.env.get_template(f"{self.spec.generation.method}.user.j2")

    def display(self, class_name: str) -> str:
        """How a class is named in prompts: its description, else its name with ``_`` as spaces."""
        for c in self.spec.classes:
            if c.name == class_name:
                return c.description or c.name.replace("_", " ")
        return class_name

    def base_context(self) -> dict[str, Any]:
        return {
            "domain": self.spec.domain,
            "data_source": self.spec.data_source,
            "labels": [self.display(c) for c in self.spec.class_names],
            "max_words": self.spec.filters.max_words or 100,
        }

    def render(self, name: str, **context: Any) -> str:
        """Render a packaged template, e.g. ``zeroshot.diversity``."""
        return self.env.get_template(f"{name}.j2").render({**self.base_context(), **context}).strip()

    def user(self, **context: Any) -> str:
        return self.user_template.render({**self.base_context(), **context}).strip()

    def messages(self, **context: Any) -> list[Message]:
        """The opening messages of a request for this spec's method."""
        msgs: list[Message] = []
        if self.spec.generation.method == "zeroshot":
            msgs.append({"role": "system", "content": self.render("zeroshot.system", **context)})
        msgs.append({"role": "user", "content": self.user(**context)})
        return msgs
