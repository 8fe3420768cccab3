"""Reading a study's YAML: PyYAML's safe loader, with every duplicate key an error.

YAML says a mapping's keys are unique, but PyYAML keeps the last of two equal keys
silently: a second ``mnli:`` under ``splits:`` would replace the first, and the study
would evaluate "mnli" on the second one's data. :class:`UniqueKeyLoader` refuses it,
naming both lines. Merge keys (``<<: *base``) still work: a key given beside a merge
overrides the merged one, as YAML intends.

>>> import yaml
>>> yaml.load("a: 1\\nb: {c: 2}\\n", Loader=UniqueKeyLoader)
{'a': 1, 'b': {'c': 2}}
>>> yaml.load("a: 1\\nb: 2\\na: 3\\n", Loader=UniqueKeyLoader)
Traceback (most recent call last):
...
modeconn.config.yamlfile.DuplicateKeyError: while constructing a mapping
found duplicate key 'a' (first at line 1)
  in "<unicode string>", line 3, column 1:
    a: 3
    ^
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKeyError(ConstructorError):
    """A mapping gives one key twice; ``first_line`` and ``key`` say which (1-based)."""

    def __init__(self, key: Any, first: yaml.Mark, second: yaml.Mark) -> None:
        super().__init__(
            "while constructing a mapping",
            None,
            f"found duplicate key {key!r} (first at line {first.line + 1})",
            second,
        )
        self.key = key
        self.first_line = first.line + 1


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises :class:`DuplicateKeyError` for a repeated key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if first is not None:
                    raise DuplicateKeyError(key, first, key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parse one YAML document with :class:`UniqueKeyLoader` (no tags beyond safe ones)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: runs no constructors
