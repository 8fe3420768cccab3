"""Reading a study's YAML: PyYAML's safe loader, with every duplicate key an error, and a
bounded cost.

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

A study is a few kilobytes; a file made to exhaust the reader is refused before it costs
anything (:class:`ParseLimitError`): more than :data:`MAX_CHARS` characters, nesting
deeper than :data:`MAX_DEPTH` (PyYAML's composer recurses, once per level), more than
:data:`MAX_ALIASES` aliases, or more than :data:`MAX_NODES` nodes once every alias is
expanded — the "billion laughs" file, ten lines whose nine levels of nine aliases each
stand for 9⁹ strings, which anything that walks the parsed study (merging ``extends``,
validation) would expand.

>>> laughs = "a: &a [x, x]\\nb: &b [*a, *a, *a]\\nc: [*b, *b, *b]\\n"
>>> load(laughs)["c"][2][1]  # a small one is fine: 3 × 3 × 2 strings in all
['x', 'x']
>>> try:
...     load("a: " + "[" * 100 + "]" * 100)
... except ParseLimitError as err:
...     print(err.problem, "at column", err.problem_mark.column + 1)
the study nests deeper than 64 levels at column 67
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

_MERGE = "tag:yaml.org,2002:merge"

MAX_CHARS = 1 << 20  # 1 Mi characters: the built-in studies are under 10 kB
MAX_DEPTH = 64  # nested mappings and lists
MAX_ALIASES = 1_000  # *name references
MAX_NODES = 200_000  # scalars, lists and mappings, every alias expanded


class ParseLimitError(yaml.MarkedYAMLError):
    """The text is too large, too deep or expands to too many nodes to be a study."""

    def __init__(self, problem: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


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
    """``yaml.SafeLoader`` that raises :class:`DuplicateKeyError` for a repeated key, and
    :class:`ParseLimitError` past the module's limits."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise ParseLimitError(f"the study uses more than {MAX_ALIASES} aliases", mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ParseLimitError(f"the study nests deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        found = _expanded_size(node, {})
        if found > MAX_NODES:
            raise ParseLimitError(
                f"the study expands to more than {MAX_NODES:,} nodes ({found:,} once its "
                "aliases are expanded)",
                node.start_mark,
            )
        return super().construct_document(node)

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


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes under ``node``, an aliased node counted once per reference (memoised: linear)."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a recursive alias (&a [*a]) counts once, never loops
        if isinstance(node, yaml.SequenceNode):
            memo[key] += sum(_expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] += sum(
                _expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value
            )
    return memo[key]


def load(text: str) -> Any:
    """Parse one YAML document with :class:`UniqueKeyLoader` (no tags beyond safe ones)."""
    if len(text) > MAX_CHARS:
        raise ParseLimitError(
            f"the study has {len(text):,} characters, more than the {MAX_CHARS:,} a study may have"
        )
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: runs no constructors
