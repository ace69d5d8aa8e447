"""A validated spec → the trials it asks for: every variant of the factor grid × every seed, fully resolved.

Overrides apply in this order, later winning: the named budget (mmn.config.BUDGETS), the spec's base, the spec's
budget overrides, the command line's (dataset, data root, epochs, ...), then the variant and its rules.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping

from mmn.config import ConfigError, RunConfig, apply_overrides, with_budget

from .spec import Spec, SpecError


@dataclass(frozen=True)
class TrialPlan:
    """One trial: a variant of the grid at one seed, with its resolved config and that config's hash."""

    trial_key: str  # readable and unique within the experiment, e.g. "msm=off,mtm=true,seed=1"
    variant: Mapping[str, Any]  # factor key → value
    variant_key: str  # the variant without the seed
    seed: int
    overrides: Mapping[str, Any]  # every dotted override on top of the defaults
    config: RunConfig
    config_hash: str
    sampled: Mapping[str, Any] = field(default_factory=dict)  # values a search chose (the final runs of a tuned spec)


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def variant_key(variant: Mapping[str, Any]) -> str:
    return ",".join(f"{key.split('.')[-1]}={_text(value)}" for key, value in variant.items())


def variants(spec: Spec) -> list[dict[str, Any]]:
    """The factor grid in spec order, less the excluded combinations."""
    grid = [dict(zip([f.key for f in spec.factors], values))
            for values in itertools.product(*(f.values for f in spec.factors))]
    return [v for v in grid if not any(all(v[k] == value for k, value in ex.items()) for ex in spec.exclude)]


def variant_overrides(spec: Spec, variant: Mapping[str, Any]) -> dict[str, Any]:
    overrides = dict(variant)
    for rule in spec.rules:
        if all(variant[key] == value for key, value in rule.when.items()):
            overrides.update(rule.set)
    return overrides


def resolve_seeds(spec: Spec, budget: str, seeds: int | list[int] | None = None) -> tuple[int, ...]:
    if seeds is not None:
        return tuple(range(1, seeds + 1)) if isinstance(seeds, int) else tuple(seeds)
    budget_seeds = spec.budgets.get(budget).seeds if budget in spec.budgets else None
    return budget_seeds or spec.seeds


def base_overrides(spec: Spec, budget: str, cli: Mapping[str, Any]) -> dict[str, Any]:
    """Everything but the variant: spec base, spec budget overrides, then the command line's."""
    overrides = dict(spec.base)
    if budget in spec.budgets:
        overrides.update(spec.budgets[budget].overrides)
    overrides.update(cli)
    return overrides


def build_config(budget: str, overrides: Mapping[str, Any], where: str) -> RunConfig:
    try:
        return apply_overrides(with_budget(RunConfig(), budget), overrides)
    except ConfigError as error:
        raise SpecError(f"{where}: {error}") from None


def expand(spec: Spec, budget: str = "quick", cli_overrides: Mapping[str, Any] | None = None,
           seeds: int | list[int] | None = None) -> list[TrialPlan]:
    """Every (variant, seed) trial of the grid; an impossible variant is an error naming it and the fix."""
    common = base_overrides(spec, budget, cli_overrides or {})
    plans = []
    for variant in variants(spec):
        key = variant_key(variant)
        overrides = {**common, **variant_overrides(spec, variant)}
        for seed in resolve_seeds(spec, budget, seeds):
            config = build_config(budget, {**overrides, "train.seed": seed},
                                  f"{spec.path}: variant {key} (add a rule or an exclude entry)")
            plans.append(TrialPlan(trial_key=f"{key},seed={seed}", variant=variant, variant_key=key, seed=seed,
                                   overrides={**overrides, "train.seed": seed}, config=config,
                                   config_hash=config.hash()))
    return plans
