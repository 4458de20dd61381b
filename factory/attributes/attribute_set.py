"""The attribute set: what prompts sample from (values per dimension and class, similar classes, units)."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL = ""  # the class key of class-independent values


@dataclass(frozen=True)
class AttributeSet:
    """``values[dimension][class]`` (class ``""`` for class-independent dimensions) and ``similar[class]``."""

    values: dict[str, dict[str, list[str]]]
    similar: dict[str, list[str]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)

    def for_class(self, dimension: str, class_name: str) -> list[str]:
        by_class = self.values[dimension]
        return by_class.get(class_name) or by_class.get(ALL, [])
