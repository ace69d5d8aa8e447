"""Experiment specs: YAML files in this folder, read with line numbers and validated into a `Spec`.

A spec names the variants to compare (a grid of `factors`, with `rules` that switch dependent options and
`exclude` for impossible combinations), the seeds, the metric, budgets by name, resources per trial (for every
budget, or per budget) and optionally a search space that tunes every variant before the final runs. Every mistake
is reported as one line, `file:line: what is wrong (and what to write instead)`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from analysis.cli import DEFAULT_MARGIN, MIN_PAIRED_SEEDS
from mmn.config import BUDGETS, MAX_SEED, ConfigError, check_key, check_value, valid_keys
from mmn.folders import RECORDED_METRICS
from mmn.suggest import closest
from mmn.yamlfile import YamlError, YamlMap, line_of, load_yaml
from mmn.model.registry import RegistryError, import_user_modules
from search_spaces import SearchSpaceError, load_search_space

SPEC_DIR = Path(__file__).resolve().parent
SCHEDULERS = ("asha",)
_TOP_LEVEL = ("name", "description", "imports", "base", "factors", "rules", "exclude", "reference", "seeds", "metric",
              "mode", "budgets", "search", "resources", "ensembles")
STREAM_FACTOR = "data.modality"  # ensembles fuse models trained on different values of this factor
_RESOURCE_KEYS = ("cpus_per_trial", "gpus_per_trial")
# The GPU share a trial asks for under each budget where neither the spec nor the command line names one, and only
# on a cluster that has GPUs. MMN is small: two trials on one GPU trained 1.26x as fast as one, in 8 GiB each (fp32,
# docs/performance.md#trials-per-gpu), hence half a GPU under paper. quick is meant for a CPU.
DEFAULT_GPUS_PER_TRIAL = {"paper": 0.5, "quick": 0.0}
MAX_SEEDS = 1_000  # seeds per variant at most: a typo (100000000) fails at once instead of filling memory


@dataclass(frozen=True)
class SeedsUntilDecided:
    """`seeds: {min: 3, max: 10, until: decided, margin: 0.5}`: seeds 1..min for every variant, then one more seed
    per round for each variant whose comparison with the reference is undecided (and for the reference), up to max
    (ablations.rounds). `margin`: the equivalence margin in the metric's points."""

    min: int
    max: int
    margin: float = DEFAULT_MARGIN

    @property
    def seeds(self) -> tuple[int, ...]:
        """Every seed a variant may get: 1..max."""
        return tuple(range(1, self.max + 1))

    def __str__(self) -> str:
        return f"seeds {self.min}..{self.max} until decided (margin {self.margin:g})"


_UNTIL_KEYS = ("min", "max", "until", "margin")


def check_seeds_until_decided(value: Mapping[str, Any]) -> SeedsUntilDecided | str:
    """`{min, max, until: decided, margin}` as SeedsUntilDecided; or, when it is not one, what is wrong."""
    unknown = [key for key in value if key not in _UNTIL_KEYS]
    if unknown:
        close = closest(str(unknown[0]), _UNTIL_KEYS)
        hint = f"did you mean {close!r}?" if close else "allowed: " + ", ".join(_UNTIL_KEYS)
        return f"unknown seeds field {unknown[0]!r} ({hint})"
    if value.get("until") != "decided" or "min" not in value or "max" not in value:
        return (f"seeds as a mapping is {{min: 3, max: 10, until: decided, margin: {DEFAULT_MARGIN:g}}} (margin "
                f"optional), got {dict(value)!r}")
    low, high, margin = value["min"], value["max"], value.get("margin", DEFAULT_MARGIN)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (low, high)):
        return f"seeds min and max must be whole numbers, got {low!r} and {high!r}"
    if not MIN_PAIRED_SEEDS <= low <= high <= MAX_SEEDS:
        return (f"seeds need {MIN_PAIRED_SEEDS} <= min <= max <= {MAX_SEEDS} (a decision needs {MIN_PAIRED_SEEDS} "
                f"seeds of each variant), got min {low}, max {high}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < float("inf"):
        return f"seeds margin must be a positive number of points, got {margin!r}"
    return SeedsUntilDecided(low, high, float(margin))


def check_seeds(value: Any) -> tuple[int, ...] | str:
    """A seed count (3 → 1, 2, 3) or a list of seeds, as a tuple; or, when `value` is not one, what is wrong."""
    if isinstance(value, int) and not isinstance(value, bool):
        return tuple(range(1, value + 1)) if 1 <= value <= MAX_SEEDS else \
            f"a seed count must lie in [1, {MAX_SEEDS}], got {value}"
    if not (isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value)):
        return f"seeds must be a count (e.g. 3) or a list of distinct non-negative integers, got {value!r}"
    if len(value) > MAX_SEEDS:
        return f"at most {MAX_SEEDS} seeds, got {len(value)}"
    bad = [s for s in value if not 0 <= s <= MAX_SEED]
    if bad:
        return f"seed {bad[0]} is outside [0, {MAX_SEED}]"
    repeated = sorted({s for s in value if value.count(s) > 1})
    if repeated:
        return f"seed {repeated[0]} is listed twice (each seed trains once; remove the repeat)"
    return tuple(value)


class SpecError(ValueError):
    """A spec that cannot run; the message is one line naming the file and line."""


@dataclass(frozen=True)
class Factor:
    key: str  # dotted config key
    values: tuple[Any, ...]
    label: str  # column header in tables


@dataclass(frozen=True)
class Rule:
    when: Mapping[str, Any]  # factor key → value
    set: Mapping[str, Any]  # dotted key → value applied to matching variants


@dataclass(frozen=True)
class Budget:
    overrides: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    samples: int | None = None
    until: SeedsUntilDecided | None = None  # seeds until decided under this budget (its seeds are 1..max)


@dataclass(frozen=True)
class Resources:
    """What one trial of a budget asks Ray for; `gpus` None is the budget's DEFAULT_GPUS_PER_TRIAL."""

    cpus: float = 1.0
    gpus: float | None = None


@dataclass(frozen=True)
class Search:
    space: str
    samples: int
    scheduler: Mapping[str, Any] | None  # {"type": "asha", "grace_period": .., "reduction_factor": ..}


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    path: Path
    base: Mapping[str, Any]
    factors: tuple[Factor, ...]
    rules: tuple[Rule, ...]
    exclude: tuple[Mapping[str, Any], ...]
    reference: Mapping[str, Any]
    seeds: tuple[int, ...]
    metric: str
    mode: str
    budgets: Mapping[str, Budget]
    search: Search | None
    resources: Mapping[str, Resources]  # budget name → what its trials ask for
    ensembles: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # name → {stream: weight}
    until: SeedsUntilDecided | None = None  # seeds until decided (then `seeds` are 1..max)
    imports: tuple[str, ...] = ()  # the user's modules, as resolved paths or module names (mmn.model.registry)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what experiment.json records)."""
        return {
            "name": self.name, "description": self.description, "base": dict(self.base),
            "factors": {f.key: list(f.values) for f in self.factors},
            "factor_labels": {f.key: f.label for f in self.factors},
            "rules": [{"when": dict(r.when), "set": dict(r.set)} for r in self.rules],
            "exclude": [dict(e) for e in self.exclude], "reference": dict(self.reference), "seeds": list(self.seeds),
            "until": _until_dict(self.until), "metric": self.metric, "mode": self.mode,
            "budgets": {n: {"overrides": dict(b.overrides), "seeds": list(b.seeds) if b.seeds else None,
                            "samples": b.samples, "until": _until_dict(b.until)} for n, b in self.budgets.items()},
            "search": None if self.search is None else {"space": self.search.space, "samples": self.search.samples,
                                                        "scheduler": self.search.scheduler},
            "resources": {n: {"cpus_per_trial": r.cpus, "gpus_per_trial": r.gpus} for n, r in self.resources.items()},
            "ensembles": {name: dict(weights) for name, weights in self.ensembles.items()},
            "imports": list(self.imports),
        }

    def varied_keys(self) -> dict[str, str]:
        """Config keys that the variants set, each with what sets it ("factor MSM" or "a rule")."""
        varied = {f.key: f"factor {f.label}" for f in self.factors}
        varied.update({key: "a rule" for rule in self.rules for key in rule.set if key not in varied})
        return varied


def _until_dict(until: SeedsUntilDecided | None) -> dict[str, Any] | None:
    return None if until is None else {"min": until.min, "max": until.max, "until": "decided",
                                       "margin": until.margin}


def _show(variant: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in variant.items())


def list_specs() -> list[tuple[str, str]]:
    """(name, description) of every spec shipped in this folder."""
    specs = []
    for path in sorted(SPEC_DIR.glob("*.yaml")):
        data = load_yaml(path) or {}
        specs.append((path.stem, str(data.get("description", "")).strip()))
    return specs


def resolve_spec_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise SpecError(f"spec file {path} does not exist")
        return path
    candidate = SPEC_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    names = [name for name, _ in list_specs()]
    close = closest(str(name_or_path), names)
    hint = f"did you mean {close}? " if close else ""
    raise SpecError(f"unknown experiment {name_or_path!r}: {hint}choose one of {', '.join(names)} "
                    f"(or pass a path to a spec .yaml; `--list` describes them)")


def load_spec(name_or_path: str | Path) -> Spec:
    path = resolve_spec_path(name_or_path)
    try:
        data = load_yaml(path)
    except YamlError as error:
        raise SpecError(str(error)) from None
    return _Parser(path).spec(data)


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: Any, key: str | None, message: str) -> SpecError:
        line = line_of(where, key)
        return SpecError(f"{self.path}{f':{line}' if line else ''}: {message}")

    def unknown_keys(self, mapping: YamlMap, allowed: tuple[str, ...], what: str) -> None:
        for key in mapping:
            if key not in allowed:
                close = closest(str(key), allowed)
                hint = f"did you mean {close!r}?" if close else f"allowed: {', '.join(allowed)}"
                raise self.fail(mapping, key, f"unknown {what} {key!r} ({hint})")

    def config_keys(self, mapping: Any, where: str) -> dict[str, Any]:
        """Dotted config keys and their values, each checked on its own; conditions between keys are checked once
        per variant, on the whole configuration (expand)."""
        if not isinstance(mapping, dict):
            raise self.fail(mapping, None, f"{where} must be a mapping of dotted config keys to values")
        for key, value in mapping.items():
            self.checked(mapping, key, where, lambda: check_value(str(key), value))
        return dict(mapping)

    def checked(self, where: Any, key: str, what: str, check: Callable[[], Any]) -> None:
        """Run a config check; its ConfigError becomes this file's error at the key's line."""
        try:
            check()
        except ConfigError as error:
            raise self.fail(where, key, f"{what}: {error}") from None

    def spec(self, data: Any) -> Spec:
        if not isinstance(data, YamlMap):
            raise SpecError(f"{self.path}: a spec is a YAML mapping with at least name, factors and metric")
        self.unknown_keys(data, _TOP_LEVEL, "field")
        for required in ("name", "factors"):
            if required not in data:
                raise SpecError(f"{self.path}: missing required field {required!r}")
        name = str(data["name"])
        imports = self.imports(data)  # first: the factors may name the modules they register
        base = self.config_keys(data.get("base") or {}, "base")
        factors = self.factors(data["factors"])
        by_key = {f.key: f for f in factors}
        rules = tuple(self.rule(r, by_key) for r in (data.get("rules") or []))
        exclude = tuple(self.condition(e, by_key, "exclude") for e in (data.get("exclude") or []))
        reference = self.condition(data.get("reference") or {f.key: f.values[0] for f in factors}, by_key, "reference")
        if set(reference) != set(by_key):
            raise self.fail(data, "reference", f"reference must give a value for every factor: {', '.join(by_key)}")
        self.grid_left(data, factors, exclude, reference)
        seeds, until = self.seeds(data, "seeds", data.get("seeds", [1]))
        metric = data.get("metric", "val_top1")
        if metric not in RECORDED_METRICS:
            raise self.fail(data, "metric", f"metric {metric!r} is not one of {', '.join(RECORDED_METRICS)}")
        mode = data.get("mode", "min" if metric == "train_loss" else "max")
        if mode not in ("max", "min"):
            raise self.fail(data, "mode", f"mode must be max or min, got {mode!r}")
        budgets = self.budgets(data.get("budgets") or {})
        search = self.search(data["search"]) if data.get("search") else None
        ensembles = self.ensembles(data, by_key)
        resources = self.resources(data.get("resources") or {})
        return Spec(name=name, description=str(data.get("description", "")).strip(), path=self.path, base=base,
                    factors=factors, rules=rules, exclude=exclude, reference=reference, seeds=seeds, metric=metric,
                    mode=mode, budgets=budgets, search=search, resources=resources, ensembles=ensembles, until=until,
                    imports=imports)

    def imports(self, data: YamlMap) -> tuple[str, ...]:
        """The spec's `imports:`: .py files (relative to the spec's folder) or module names, imported now so that
        their modules are registered before the factors are checked; resolved, as the trials import them."""
        names = data.get("imports") or []
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise self.fail(data, "imports", "imports must be a list of .py files or module names, e.g. [my_mtm.py]")
        try:
            return tuple(import_user_modules(names, base=self.path.parent))
        except RegistryError as error:
            raise self.fail(data, "imports", str(error)) from None

    def resources(self, data: Any) -> dict[str, Resources]:
        """Per budget: the values given for every budget, then the budget's own, e.g.
        `resources: {cpus_per_trial: 1, paper: {gpus_per_trial: 0.25}}`."""
        if not isinstance(data, dict):
            raise self.fail(data, None, "resources must be {cpus_per_trial: N, gpus_per_trial: F}, optionally per "
                                        "budget, e.g. {paper: {gpus_per_trial: 0.25}}")
        self.unknown_keys(data, (*_RESOURCE_KEYS, *BUDGETS), "resource")
        every = self.resource_values(data)
        resources = {}
        for budget in BUDGETS:
            own = data.get(budget) or {}
            if not isinstance(own, dict):
                raise self.fail(data, budget, f"resources of budget {budget} must be {{cpus_per_trial: N, "
                                              f"gpus_per_trial: F}}")
            self.unknown_keys(own, _RESOURCE_KEYS, f"resource of budget {budget}")
            resources[budget] = Resources(**{**every, **self.resource_values(own)})
        return resources

    def resource_values(self, data: Mapping[str, Any]) -> dict[str, float]:
        """The Resources fields that `data` sets, each checked."""
        values = {}
        if "cpus_per_trial" in data:
            cpus = data["cpus_per_trial"]
            if isinstance(cpus, bool) or not (isinstance(cpus, (int, float)) and cpus > 0):
                raise self.fail(data, "cpus_per_trial", f"cpus_per_trial must be a positive number, got {cpus!r}")
            values["cpus"] = float(cpus)
        if "gpus_per_trial" in data:
            gpus = data["gpus_per_trial"]
            if isinstance(gpus, bool) or not (isinstance(gpus, (int, float)) and gpus >= 0
                                              and (gpus <= 1 or float(gpus).is_integer())):
                raise self.fail(data, "gpus_per_trial",
                                f"gpus_per_trial must be a fraction in [0, 1] or a whole number, got {gpus!r}")
            values["gpus"] = float(gpus)
        return values

    def factors(self, data: Any) -> tuple[Factor, ...]:
        if not isinstance(data, YamlMap) or not data:
            raise SpecError(f"{self.path}: factors must map config keys to their values, e.g. "
                            f"'model.msm: {{values: [released, off], label: MSM}}'")
        factors = []
        for key, entry in data.items():
            self.checked(data, key, "factors", lambda: check_key(str(key)))
            if isinstance(entry, list):
                entry = {"values": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("values"), list) or not entry["values"]:
                raise self.fail(data, key, f"factor {key} needs a non-empty list of values")
            if isinstance(entry, YamlMap):
                self.unknown_keys(entry, ("values", "label"), "factor field")
            for value in entry["values"]:
                self.checked(data, key, f"factor {key}", lambda: check_value(key, value))
            # compared as the config sees them: 1 and 1.0, or on and true, are one value
            seen: dict[Any, Any] = {}
            for value in entry["values"]:
                typed = check_value(key, value)
                if typed in seen:
                    spelt = "" if seen[typed] == value else f" (also as {seen[typed]!r})"
                    raise self.fail(data, key, f"factor {key} lists {value!r} twice{spelt}: each value is one "
                                               f"variant; remove the repeat")
                seen[typed] = value
            factors.append(Factor(key, tuple(entry["values"]), str(entry.get("label", key.split(".")[-1]))))
        return tuple(factors)

    def condition(self, data: Any, factors: Mapping[str, Factor], what: str) -> dict[str, Any]:
        if not isinstance(data, dict) or not data:
            raise self.fail(data, None, f"{what} must map factor keys to values")
        for key, value in data.items():
            if key not in factors:
                raise self.fail(data, key, f"{what}: {key!r} is not a factor (factors: {', '.join(factors)})")
            if value not in factors[key].values:
                raise self.fail(data, key, f"{what}: {key}={value!r} is not one of its values "
                                           f"{list(factors[key].values)}")
        return dict(data)

    def grid_left(self, data: YamlMap, factors: tuple[Factor, ...], exclude: tuple[Mapping[str, Any], ...],
                  reference: Mapping[str, Any]) -> None:
        """The grid keeps at least one variant, and the reference is one of those kept."""
        def excluded(variant: Mapping[str, Any]) -> bool:
            return any(all(variant[k] == v for k, v in entry.items()) for entry in exclude)

        if not excluded(reference):  # the reference is a variant of the grid, so at least it is left
            return
        grid = itertools.product(*(f.values for f in factors))
        if all(excluded(dict(zip([f.key for f in factors], values))) for values in grid):
            raise self.fail(data, "exclude", "exclude removes every variant of the grid; nothing would run "
                                             "(narrow the exclude entries)")
        where = "reference" if "reference" in data else "exclude"
        raise self.fail(data, where, f"the reference {_show(reference)} is removed by exclude; name a kept "
                                     f"variant as reference (or narrow the exclude)")

    def rule(self, data: Any, factors: Mapping[str, Factor]) -> Rule:
        if not isinstance(data, YamlMap) or set(data) != {"when", "set"}:
            raise self.fail(data, None, "each rule is {when: {factor: value}, set: {config key: value}}")
        return Rule(self.condition(data["when"], factors, "rule when"), self.config_keys(data["set"], "rule set"))

    def seeds(self, where: Any, key: str, value: Any) -> tuple[tuple[int, ...], SeedsUntilDecided | None]:
        """The seeds, and the rule that adds them round by round where `value` is {min, max, until: decided}."""
        if isinstance(value, dict):
            until = check_seeds_until_decided(value)
            if isinstance(until, str):
                raise self.fail(where, key, until)
            return until.seeds, until
        seeds = check_seeds(value)
        if isinstance(seeds, str):
            raise self.fail(where, key, seeds)
        return seeds, None

    def budgets(self, data: Any) -> dict[str, Budget]:
        budgets = {}
        for name, entry in data.items():
            if name not in BUDGETS:
                raise self.fail(data, name, f"unknown budget {name!r}; budgets are {', '.join(BUDGETS)}")
            entry = entry or {}
            if isinstance(entry, YamlMap):
                self.unknown_keys(entry, ("overrides", "seeds", "samples"), "budget field")
            samples = entry.get("samples")
            if samples is not None and not (isinstance(samples, int) and samples >= 1):
                raise self.fail(entry, "samples", f"samples must be a positive integer, got {samples!r}")
            seeds, until = self.seeds(entry, "seeds", entry["seeds"]) if "seeds" in entry else (None, None)
            budgets[name] = Budget(
                overrides=self.config_keys(entry.get("overrides") or {}, f"budgets.{name}.overrides"),
                seeds=seeds, samples=samples, until=until)
        return budgets

    def search(self, data: Any) -> Search:
        if not isinstance(data, YamlMap):
            raise self.fail(data, None, "search must be {space: NAME, samples: N, scheduler: {...}}")
        self.unknown_keys(data, ("space", "samples", "scheduler"), "search field")
        if "space" not in data:
            raise self.fail(data, None, "search needs a space (a file in search_spaces/)")
        try:
            load_search_space(data["space"], known_keys=valid_keys())
        except SearchSpaceError as error:
            raise self.fail(data, "space", f"search space: {error}") from None
        samples = data.get("samples", 8)
        if not (isinstance(samples, int) and samples >= 1):
            raise self.fail(data, "samples", f"samples must be a positive integer, got {samples!r}")
        scheduler = data.get("scheduler")
        if scheduler is not None:
            if not isinstance(scheduler, YamlMap):
                raise self.fail(data, "scheduler", "scheduler must be {type: asha, grace_period: N, reduction_factor: N}")
            self.unknown_keys(scheduler, ("type", "grace_period", "reduction_factor"), "scheduler field")
            if scheduler.get("type", "asha") not in SCHEDULERS:
                raise self.fail(scheduler, "type", f"scheduler type must be one of {', '.join(SCHEDULERS)}")
            scheduler = {"type": "asha", "grace_period": int(scheduler.get("grace_period", 1)),
                         "reduction_factor": int(scheduler.get("reduction_factor", 2))}
        return Search(str(data["space"]), samples, scheduler)

    def ensembles(self, spec: YamlMap, factors: Mapping[str, Factor]) -> dict[str, dict[str, float]]:
        """Stream ensembles, e.g. `ensembles: {2s: {joint: 1, bone: 1}}`: name → {stream: weight}, each stream a
        value of the data.modality factor (a model trained on it), fused by the report."""
        data = spec.get("ensembles")
        if data is None:  # absent, or left empty
            return {}
        if not isinstance(data, YamlMap) or not data:
            raise self.fail(spec, "ensembles", "ensembles must map names to {stream: weight}, e.g. "
                                               "'2s: {joint: 1, bone: 1}'")
        if STREAM_FACTOR not in factors:
            raise self.fail(spec, "ensembles", f"ensembles fuse models trained on different streams: they need a "
                                               f"{STREAM_FACTOR} factor (factors: {', '.join(factors)})")
        streams = [str(value) for value in factors[STREAM_FACTOR].values]
        ensembles = {}
        for name, weights in data.items():
            if str(name) in streams:
                raise self.fail(data, name, f"ensemble {name!r} is named like a stream; name it e.g. 2s or 4s")
            if not isinstance(weights, dict) or len(weights) < 2:
                raise self.fail(data, name, f"ensemble {name} must map two or more streams to weights, e.g. "
                                            f"{{joint: 1, bone: 1}}")
            for stream, weight in weights.items():
                if str(stream) not in streams:
                    close = closest(str(stream), streams)
                    hint = f"did you mean {close}? " if close else ""
                    raise self.fail(weights, stream, f"ensemble {name}: {stream!r} is not a value of the "
                                                     f"{STREAM_FACTOR} factor; {hint}streams: {', '.join(streams)}")
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
                    raise self.fail(weights, stream, f"ensemble {name}: the weight of {stream} must be a positive "
                                                     f"number, got {weight!r}")
            ensembles[str(name)] = {str(stream): float(weight) for stream, weight in weights.items()}
        return ensembles
