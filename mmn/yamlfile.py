"""YAML read safely and with line numbers, for errors that say `file:line: what is wrong`.

Every YAML file the project reads (experiment specs, search spaces, config files) goes through `load_yaml`. It uses
PyYAML's safe loader, so a `!!python/...` tag is an error and never a call. Mappings come back as `YamlMap` and
lists as `YamlList`: plain dicts and lists that also carry the line of the container and of each key or item,
which `line_of` reads. A key given twice in one mapping is an error (YAML would silently keep the last one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlError(ValueError):
    """A file that is not valid YAML, or repeats a key; one line that starts `file:line:`."""


class _KeyError(Exception):
    """A key that cannot stand where it does (repeated, or not a scalar), at `line`."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class YamlMap(dict):
    """A YAML mapping: `line` is where it starts, `lines[key]` where each key stands."""

    line: int = 0
    lines: dict[Any, int]


class YamlList(list):
    """A YAML list: `line` is where it starts, `lines[i]` where item i stands."""

    line: int = 0
    lines: list[int]


def kind(value: Any) -> str:
    """How a value read from a file is named in an error: "a mapping", "a list", "nothing" or its repr."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if value not in (None, "") else "nothing"


def line_of(container: Any, key: Any = None) -> int | None:
    """The line of `key` (a mapping key or list index) in `container`, else of `container` itself, else None."""
    lines = getattr(container, "lines", None)
    if key is not None and lines is not None:
        if isinstance(lines, dict) and key in lines:
            return lines[key]
        if isinstance(lines, list) and isinstance(key, int) and 0 <= key < len(lines):
            return lines[key]
    return getattr(container, "line", None) or None


class SafeLineLoader(yaml.SafeLoader):
    """PyYAML's safe loader, building YamlMap and YamlList with their lines."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.parents: dict[int, str] = {}  # id of a mapping node → the key whose value it is

    def note_parents(self, node: yaml.Node) -> None:
        """Remember under which key each mapping stands, so that a duplicate key can say where it is."""
        children = node.value if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) else []
        for child in children:
            key_node, value_node = child if isinstance(node, yaml.MappingNode) else (None, child)
            if isinstance(value_node, yaml.MappingNode) and isinstance(key_node, yaml.ScalarNode):
                self.parents[id(value_node)] = key_node.value
            self.note_parents(value_node)

    def construct_line_mapping(self, node: yaml.MappingNode) -> YamlMap:
        self.flatten_mapping(node)  # resolves `<<: *anchor` merges
        mapping = YamlMap()
        mapping.line, mapping.lines = node.start_mark.line + 1, {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (list, dict)):
                raise _KeyError(line, "a key must be a single value, not a list or a mapping")
            if key in mapping.lines:
                raise _KeyError(line, f"duplicate key {key!r} in {self.parents.get(id(node), 'the file')} "
                                      f"(first on line {mapping.lines[key]})")
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.lines[key] = line
        return mapping

    def construct_line_sequence(self, node: yaml.SequenceNode) -> YamlList:
        sequence = YamlList(self.construct_object(item, deep=True) for item in node.value)
        sequence.line, sequence.lines = node.start_mark.line + 1, [item.start_mark.line + 1 for item in node.value]
        return sequence


SafeLineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                               SafeLineLoader.construct_line_mapping)
SafeLineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
                               SafeLineLoader.construct_line_sequence)

def load_yaml(path: str | Path, text: str | None = None, where: str | None = None) -> Any:
    """The YAML document in `path` (or in `text`, read from `path`), with lines; YamlError on any mistake.

    `where` is how the file is named in messages (default: the path as given).
    """
    where = str(path) if where is None else where
    if text is None:
        text = Path(path).read_text(encoding="utf-8")
    try:
        loader = SafeLineLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            loader.note_parents(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except _KeyError as error:
        raise YamlError(f"{where}:{error.line}: {error}") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise YamlError(f"{where}{line}: YAML syntax error: {error.problem or error.context}") from None
    except yaml.reader.ReaderError as error:  # a control character: it carries a position, not a line
        line = text.count("\n", 0, error.position) + 1
        raise YamlError(f"{where}:{line}: YAML syntax error: {error.reason} (character #x{error.character:04x})"
                        ) from None
