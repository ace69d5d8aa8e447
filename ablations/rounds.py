"""Seeds until decided: an experiment whose spec says `seeds: {min: 3, max: 10, until: decided}` (or run with
`--seeds 3..10`) runs in rounds instead of on every seed at once.

Round 1 runs seeds 1..min of every variant. After each round every variant is compared with the reference over the
seeds both finished, by the rule the report's table shows (analysis.stats.decide_all: the paired t-test,
Holm-corrected across the variants, or two one-sided tests within ± margin for equivalence). Each undecided variant,
and the reference that every pair needs, gets its next seed; until every variant is decided or has `max` seeds.

Nothing about the rounds is stored: they are replayed from the trial records. A rerun plans round 1 again, finds
its trials finished (by config hash, as any rerun does), decides from their records exactly as before, and so on:
it runs only what the interrupted run had not finished, and continues the rounds from there.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from analysis.stats import decide_all

from .console import LOG
from .expand import TrialPlan, variant_key
from .spec import SeedsUntilDecided, Spec

if TYPE_CHECKING:
    from .runner import RunOptions

DECIDED = ("better", "worse", "equivalent")


def seeds_until_decided(spec: Spec, options: RunOptions) -> SeedsUntilDecided | None:
    """The rule this run follows, with expand.resolve_seeds' precedence: the command line's seeds (options.until
    is its --seeds MIN..MAX, None for fixed seeds), else the budget's, else the spec's. A command-line range keeps
    the spec's margin."""
    if options.seeds is not None:
        if options.until is not None and spec.until is not None:
            return SeedsUntilDecided(options.until.min, options.until.max, spec.until.margin)
        return options.until
    own = spec.budgets.get(options.budget)
    if own is not None and own.seeds:
        return own.until
    return spec.until


def round_decisions(planned: Sequence[TrialPlan], values: Mapping[str, float], reference: str,
                    margin: float, higher_is_better: bool) -> dict[str, str]:
    """Each non-reference variant's decision (analysis.stats.DECISIONS, "" below 3 shared seeds) from the finished
    `values` (config hash → metric) of the `planned` trials, paired with the reference by seed."""
    by_seed: dict[str, dict[int, float]] = {}
    for plan in planned:
        by_seed.setdefault(plan.variant_key, {})
        if plan.config_hash in values:
            by_seed[plan.variant_key][plan.seed] = values[plan.config_hash]
    ours = by_seed.get(reference, {})
    differences = {key: [value - ours[seed] for seed, value in sorted(seeds.items()) if seed in ours]
                   for key, seeds in by_seed.items() if key != reference}
    return {key: decision for key, (_, _, decision) in
            decide_all(differences, "t", margin, higher_is_better).items()}


def run_rounds(plans: Sequence[TrialPlan], rule: SeedsUntilDecided, spec: Spec, unfinished: Sequence[TrialPlan],
               run: Callable[[list[TrialPlan]], None],
               results: Callable[[], Mapping[str, Mapping[str, Any]]]) -> list[TrialPlan]:
    """Run `plans` (every variant on seeds 1..max) in rounds until decided; return the plans the rounds used.

    unfinished: the plans without a finished result when the run began (the runner's); run: runs a list of them;
    results: config hash → trial record, read afresh after each round.
    """
    by_variant: dict[str, list[TrialPlan]] = {}
    for plan in plans:
        by_variant.setdefault(plan.variant_key, []).append(plan)
    reference = variant_key({factor.key: spec.reference[factor.key] for factor in spec.factors})  # in grid order
    counts = {key: rule.min for key in by_variant}
    to_run = {plan.config_hash for plan in unfinished}
    number = 0
    while True:
        number += 1
        planned = [plan for key, variant in by_variant.items() for plan in variant[:counts[key]]]
        # Each trial runs at most once per invocation: one that failed stays failed, as in a run without rounds.
        batch = [plan for plan in planned if plan.config_hash in to_run]
        to_run -= {plan.config_hash for plan in batch}
        if batch:
            LOG.info(f"round {number}: {len(batch)} trials")
            run(batch)
        values = {config_hash: record["best"][spec.metric] for config_hash, record in results().items()
                  if record.get("status") == "finished" and spec.metric in (record.get("best") or {})}
        decisions = round_decisions(planned, values, reference, rule.margin, spec.mode == "max")
        undecided = [key for key, decision in decisions.items() if decision not in DECIDED]
        LOG.info(f"round {number}: " + "; ".join(f"{key} {decision or 'too few seeds'} ({counts[key]} seeds)"
                                                 for key, decision in decisions.items()))
        grow = [key for key in undecided if counts[key] < rule.max]
        if not grow:
            if undecided:
                LOG.info(f"{len(undecided)} variants still undecided at {rule.max} seeds (the most the spec allows)")
            return planned
        for key in {*grow, reference}:
            counts[key] = min(counts[key] + 1, rule.max)
