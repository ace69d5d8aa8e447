"""Load a search space from YAML and turn it into an Optuna define-by-run function.

A search space is a YAML file with three top-level keys::

    name: tune                      # optional; defaults to the file's stem and must equal it when given
    description: Learning rate, weight decay, regularisation and width of MMN.   # optional, one line
    parameters:                     # required, non-empty; sampled in file order (define-by-run order)
      train.lr:        {type: log_float, low: 1.0e-4, high: 3.0e-3}
      model.depth:     {type: int, low: 1, high: 4}
      train.optimizer: {type: categorical, choices: [adamw, sgd]}
      train.momentum:  {type: float, low: 0.8, high: 0.99, when: {train.optimizer: sgd}}

Each key under ``parameters`` is a dotted config key (``section.field``), used verbatim as the Optuna parameter
name. Each value is a mapping with a ``type`` and the fields of that type:

===============  ==========================  ===============================  ==================================
type             required                    optional                         sampled with
===============  ==========================  ===============================  ==================================
``float``        ``low``, ``high``           ``step``                         ``suggest_float(low, high, step)``
``log_float``    ``low`` > 0, ``high``                                        ``suggest_float(..., log=True)``
``int``          ``low``, ``high``           ``step``, ``log: true``          ``suggest_int``
``categorical``  ``choices`` (scalars)                                        ``suggest_categorical``
===============  ==========================  ===============================  ==================================

``low`` must be below ``high``; a ``step`` must divide ``high - low``; ``int`` with ``log: true`` needs ``low >= 1``
and no step. Every type also takes ``when``, which makes the parameter conditional::

    when: {train.optimizer: sgd}              # sampled only if train.optimizer was sampled as sgd
    when: {model.depth: [3, 4]}               # ... as one of these values
    when: {train.optimizer: sgd, model.depth: 4}   # all conditions must hold

A condition names a ``categorical`` or ``int`` parameter defined *earlier* in the file and values it can take. A
parameter whose condition's parameter was itself not sampled is not sampled either.

Note: PyYAML reads ``1e-4`` (no dot) as text; write ``1.0e-4``.

Every mistake raises :class:`SearchSpaceError` with a one-line message ``<file>:<line>: <key>: <what is wrong>``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from mmn.config import KEY_ALIASES
from mmn.suggest import closest
from mmn.yamlfile import YamlError, YamlList, YamlMap, kind, line_of, load_yaml

__all__ = ["PARAMETER_TYPES", "Parameter", "SearchSpace", "SearchSpaceError", "list_search_spaces",
           "load_search_space"]

PACKAGE_DIR = Path(__file__).resolve().parent
TOP_LEVEL_KEYS = ("name", "description", "parameters")
# Required and optional fields of each parameter type, in the order they are documented and recorded.
_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "float": (("low", "high"), ("step", "when")),
    "log_float": (("low", "high"), ("when",)),
    "int": (("low", "high"), ("step", "log", "when")),
    "categorical": (("choices",), ("when",)),
}
PARAMETER_TYPES = tuple(_FIELDS)
_ALL_FIELDS = ("type", *dict.fromkeys(f for required, optional in _FIELDS.values() for f in required + optional))
_KEY_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")

Scalar = str | int | float | bool | None


class SearchSpaceError(ValueError):
    """A search-space file that cannot be used; the message names the file, the line and what to change."""


def _same(a: Any, b: Any) -> bool:
    # YAML's `true` equals 1 in Python; a condition on a bool choice must not match an int and vice versa.
    return isinstance(a, bool) == isinstance(b, bool) and a == b


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter: its dotted config key, distribution, and the condition under which it is sampled."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False  # log scale: always for log_float, `log: true` for int
    choices: tuple[Scalar, ...] = ()
    when: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()  # (parameter key, allowed values); all must hold

    def is_active(self, sampled: Mapping[str, Any]) -> bool:
        """Whether every condition holds for the values sampled so far in this trial."""
        return all(key in sampled and any(_same(sampled[key], v) for v in values) for key, values in self.when)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample this parameter; only `suggest_*` is called, so Ray's wrapper around the trial works too."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def can_take(self, value: Any) -> bool:
        """Whether sampling can produce `value` (conditions may only name such values)."""
        if self.type == "categorical":
            return any(_same(value, c) for c in self.choices)
        if self.type == "int":
            return (isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
                    and (value - self.low) % (self.step or 1) == 0)
        return False  # a continuous value is hit with probability zero

    def to_dict(self) -> dict[str, Any]:
        """The parameter in the YAML format (without its key), for recording alongside results."""
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out["low"], out["high"] = self.low, self.high
            if self.step is not None:
                out["step"] = self.step
            if self.log and self.type == "int":
                out["log"] = True
        if self.when:
            out["when"] = {key: values[0] if len(values) == 1 else list(values) for key, values in self.when}
        return out


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; parameters are in file order, which is the define-by-run order."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.parameters)

    def define_by_run(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample the active parameters into `trial`; return ``{dotted_key: value}`` for each one sampled.

        Use this in a plain Optuna objective. For Ray Tune's ``OptunaSearch(space=...)`` use
        :meth:`optuna_space_fn`, because Ray reads the sampled values from the trial itself and requires the
        function to return only constants (or None).
        """
        sampled: dict[str, Any] = {}
        for parameter in self.parameters:
            if parameter.is_active(sampled):
                sampled[parameter.key] = parameter.suggest(trial)
        return sampled

    def optuna_space_fn(self, constants: Mapping[str, Any] | None = None) -> Callable[[optuna.Trial], dict | None]:
        """A define-by-run function for Ray Tune's ``OptunaSearch``: it samples, then returns only `constants`.

        `constants` are fixed config values Ray merges into every trial's config; they may not share a key with
        a sampled parameter (Ray would silently let the constant win).
        """
        fixed = dict(constants or {})
        clash = sorted(set(fixed) & set(self.keys))
        if clash:
            raise SearchSpaceError(f"search space {self.name!r}: constants {', '.join(clash)} are also sampled; "
                                   "drop them from the constants or from the search space")
        return _OptunaSpaceFn(self, tuple(fixed.items()))

    def to_dict(self) -> dict[str, Any]:
        """The space in the YAML format, for recording with an experiment."""
        return {"name": self.name, "description": self.description,
                "parameters": {p.key: p.to_dict() for p in self.parameters}}


@dataclass(frozen=True)
class _OptunaSpaceFn:
    # A module-level class rather than a closure so Ray can pickle the searcher when it checkpoints.
    space: SearchSpace
    constants: tuple[tuple[str, Any], ...]

    def __call__(self, trial: optuna.Trial) -> dict[str, Any] | None:
        self.space.define_by_run(trial)
        return dict(self.constants) or None  # a fresh dict each call, so Ray cannot mutate ours


def list_search_spaces() -> list[tuple[str, str]]:
    """``(name, description)`` of each search space shipped in this package, sorted by name."""
    return [(space.name, space.description)
            for space in (load_search_space(path) for path in sorted(PACKAGE_DIR.glob("*.yaml")))]


def load_search_space(path_or_name: str | Path, known_keys: Collection[str] | None = None) -> SearchSpace:
    """Load and validate a search space.

    `path_or_name` is a path to a YAML file, or the name of a packaged one (``"tune"`` means
    ``search_spaces/tune.yaml``). With `known_keys`, every parameter key must be one of them.
    """
    path = _resolve(path_or_name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SearchSpaceError(f"{_display(path)}: cannot read search space: {exc}") from exc
    return _Parser(path, known_keys).parse(text)


def _resolve(path_or_name: str | Path) -> Path:
    text = str(path_or_name)
    if isinstance(path_or_name, Path) or "/" in text or "\\" in text or text.endswith((".yaml", ".yml")):
        return Path(path_or_name)
    packaged = PACKAGE_DIR / f"{text}.yaml"
    if not packaged.is_file():
        names = sorted(p.stem for p in PACKAGE_DIR.glob("*.yaml"))
        raise SearchSpaceError(f"no search space named {text!r}{_did_you_mean(text, names)}; "
                               f"available: {', '.join(names)} (or give a path to a .yaml file)")
    return packaged


def _did_you_mean(word: str, candidates: Collection[str], aliases: Mapping[str, str] | None = None) -> str:
    close = closest(word, list(candidates), aliases)
    return f" (did you mean {close!r}?)" if close else ""


def _display(path: Path) -> str:
    # Relative to the working directory when possible, so messages read like compiler errors and stay short.
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _Parser:
    """Walks the YAML data (whose mappings and lists keep their line numbers) and builds a validated SearchSpace.

    Errors point at `(container, key)`: the line of `key` in the mapping or list `container`."""

    def __init__(self, path: Path, known_keys: Collection[str] | None) -> None:
        self.path = path
        self.where = _display(path)
        self.known_keys = None if known_keys is None else frozenset(known_keys)

    def fail(self, container: Any, key: Any, message: str, parameter: str | None = None) -> SearchSpaceError:
        prefix = f"{self.where}:{line_of(container, key) or 1}: " + (f"{parameter}: " if parameter else "")
        return SearchSpaceError(prefix + message)

    def mapping(self, container: Any, key: Any, what: str, parameter: str | None = None) -> YamlMap:
        """container[key] (the whole file when key is None), which must be a mapping with text keys."""
        value = container if key is None else container[key]
        if not isinstance(value, YamlMap):
            raise self.fail(container, key, f"{what} must be a mapping, got {kind(value)}", parameter)
        for name in value:
            if not isinstance(name, str):
                raise self.fail(value, name, f"keys of {what} must be text, got {name!r}", parameter)
        return value

    def parse(self, text: str) -> SearchSpace:
        try:
            root = load_yaml(self.path, text, where=self.where)
        except YamlError as error:
            raise SearchSpaceError(str(error)) from None
        if root is None:
            raise SearchSpaceError(f"{self.where}:1: file is empty; expected keys {', '.join(TOP_LEVEL_KEYS)}")
        top = self.mapping(root, None, "the file")
        for name in top:
            if name not in TOP_LEVEL_KEYS:
                raise self.fail(top, name, f"unknown top-level key {name!r}{_did_you_mean(name, TOP_LEVEL_KEYS)}; "
                                           f"allowed: {', '.join(TOP_LEVEL_KEYS)}")
        if "parameters" not in top:
            raise self.fail(top, None, "missing top-level key 'parameters'")
        name = self.path.stem
        if "name" in top and top["name"] != name:
            raise self.fail(top, "name", f"name {top['name']!r} must match the file name {name!r}")
        description = top.get("description", "")
        if not isinstance(description, str):
            raise self.fail(top, "description", f"description must be text, got {description!r}")
        entries = self.mapping(top, "parameters", "parameters")
        if not entries:
            raise self.fail(top, "parameters", "parameters is empty; define at least one")
        parameters: dict[str, Parameter] = {}
        for key in entries:
            parameters[key] = self.parameter(entries, key, parameters)
        return SearchSpace(name=name, description=description.strip(), parameters=tuple(parameters.values()))

    def parameter(self, entries: YamlMap, key: str, earlier: Mapping[str, Parameter]) -> Parameter:
        if not _KEY_PATTERN.fullmatch(key):
            raise self.fail(entries, key, "a parameter key must be a dotted config key like train.lr or "
                                          "model.drop_path", key)
        if self.known_keys is not None and key not in self.known_keys:
            raise self.fail(entries, key, f"unknown config key{_did_you_mean(key, self.known_keys, KEY_ALIASES)}",
                            key)
        fields = self.mapping(entries, key, "a parameter", key)
        if "type" not in fields:
            raise self.fail(entries, key, f"missing field 'type' (one of {', '.join(PARAMETER_TYPES)})", key)
        kind = fields["type"]
        if not isinstance(kind, str) or kind not in _FIELDS:
            hint = _did_you_mean(kind, PARAMETER_TYPES) if isinstance(kind, str) else ""
            raise self.fail(fields, "type", f"unknown type {kind!r}{hint}; valid types: {', '.join(PARAMETER_TYPES)}",
                            key)
        required, optional = _FIELDS[kind]
        allowed = ("type", *required, *optional)
        for name in fields:
            if name in allowed:
                continue
            if name in _ALL_FIELDS:
                raise self.fail(fields, name, f"field {name!r} does not apply to type {kind} "
                                              f"(its fields: {', '.join(allowed)})", key)
            raise self.fail(fields, name, f"unknown field {name!r}{_did_you_mean(name, allowed)}", key)
        for name in required:
            if name not in fields:
                raise self.fail(entries, key, f"missing field {name!r} (type {kind} needs {', '.join(required)})",
                                key)
        parameter = self.distribution(key, kind, entries, fields)
        if "when" in fields:
            parameter = replace(parameter, when=self.condition(key, fields, earlier, entries))
        return parameter

    def number(self, key: str, fields: YamlMap, name: str, integer: bool) -> int | float:
        value = fields[name]
        wanted = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            hint = ""
            if isinstance(value, str) and re.fullmatch(r"[-+]?\d+[eE][-+]?\d+", value):
                hint = f"; YAML reads {value} as text, write it with a dot: {re.sub('[eE]', '.0e', value, 1)}"
            raise self.fail(fields, name, f"{name} must be {wanted}, got {value!r}{hint}", key)
        if not math.isfinite(value):
            raise self.fail(fields, name, f"{name} must be finite, got {value!r}", key)
        return value if integer else float(value)  # `low: 0` on a float range records as 0.0

    def distribution(self, key: str, kind: str, entries: YamlMap, fields: YamlMap) -> Parameter:
        if kind == "categorical":
            return Parameter(key, kind, choices=self.choices(key, fields))
        integer = kind == "int"
        low = self.number(key, fields, "low", integer)
        high = self.number(key, fields, "high", integer)
        if not low < high:
            raise self.fail(entries, key, f"low must be < high (got low={low}, high={high})", key)
        log = kind == "log_float"
        if "log" in fields:
            log = fields["log"]
            if not isinstance(log, bool):
                raise self.fail(fields, "log", f"log must be true or false, got {log!r}", key)
        if log and low <= 0:
            raise self.fail(fields, "low", f"low must be > 0 on a log scale (got low={low})", key)
        if log and integer and low < 1:
            raise self.fail(fields, "low", f"low must be >= 1 for a log-scaled int (got low={low})", key)
        step = None
        if "step" in fields:
            step = self.number(key, fields, "step", integer)
            if step <= 0:
                raise self.fail(fields, "step", f"step must be > 0 (got step={step})", key)
            if log:
                raise self.fail(fields, "step", "step cannot be combined with log: true (Optuna forbids it)", key)
            # Optuna would silently lower `high` to the last point on the grid; make the file say what is sampled.
            span = (high - low) / step
            if abs(span - round(span)) > 1e-9 * max(1.0, abs(span)):
                raise self.fail(fields, "step", f"step={step} does not divide high - low = {high - low:g}", key)
        return Parameter(key, kind, low=low, high=high, step=step, log=log)

    def choices(self, key: str, fields: YamlMap) -> tuple[Scalar, ...]:
        items = fields["choices"]
        if not isinstance(items, YamlList):
            raise self.fail(fields, "choices", f"choices must be a list, got {kind(items)}", key)
        if not items:
            raise self.fail(fields, "choices", "choices is empty; give at least one value", key)
        values: list[Scalar] = []
        for index, value in enumerate(items):
            if not isinstance(value, (str, int, float, bool, type(None))):
                raise self.fail(items, index, f"choices must be scalars (text, number, true/false, null), got "
                                              f"{value!r}", key)
            if any(_same(value, v) for v in values):
                raise self.fail(items, index, f"duplicate choice {value!r}", key)
            values.append(value)
        return tuple(values)

    def condition(self, key: str, fields: YamlMap, earlier: Mapping[str, Parameter],
                  entries: YamlMap) -> tuple[tuple[str, tuple[Scalar, ...]], ...]:
        when = self.mapping(fields, "when", "when", key)
        if not when:
            raise self.fail(fields, "when", "when is empty; name a parameter and its value(s), e.g. "
                                            "{train.optimizer: sgd}", key)
        conditions = []
        for other, raw in when.items():
            if other not in earlier:
                if other == key:
                    raise self.fail(when, other, "a parameter cannot depend on itself", key)
                if other in entries:
                    raise self.fail(when, other, f"condition on {other!r}, defined later (line "
                                                 f"{line_of(entries, other)}); move it above {key!r}", key)
                raise self.fail(when, other, f"condition on unknown parameter {other!r}"
                                             f"{_did_you_mean(other, list(earlier))}", key)
            target = earlier[other]
            if target.type not in ("categorical", "int"):
                raise self.fail(when, other, f"conditions may only name categorical or int parameters; "
                                             f"{other!r} is {target.type}", key)
            values = tuple(raw) if isinstance(raw, list) else (raw,)
            if not values:
                raise self.fail(when, other, f"condition on {other!r} lists no values", key)
            for value in values:
                if not target.can_take(value):
                    takes = (", ".join(map(repr, target.choices)) if target.type == "categorical"
                             else f"integers {target.low}..{target.high}" + (f" step {target.step}" if target.step
                                                                             else ""))
                    raise self.fail(when, other, f"condition {other}={value!r} can never hold; {other} takes "
                                                 f"{takes}", key)
            conditions.append((other, values))
        return tuple(conditions)
