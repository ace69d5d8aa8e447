"""Tune searchers for trial packs: each member stays a trial of the Optuna study, and in the tuning phase Optuna
suggests K configurations at a time, they train as one pack, and ASHA decides per member.

With packs (`--pack`, ablations.packing), Tune runs one trial per pack. `PlannedPackSearch` hands Tune the planned
packs of a grid or final phase and keeps the invocation's study as it is without packs: one Optuna trial per member,
its factors and seed as parameters, told the member's own value (so optuna-dashboard and the report's importances
show the factors, not a pack's name).

In the tuning phase, a variant's samples train K at a time as one fused model (mmn.train.fit_pack). `PackSearch` is
the Tune searcher that forms those packs. It asks Optuna's TPE for K samples in a row with the constant-liar strategy
(a sample still training counts as the worst value seen so far, so that the K samples spread over the space instead
of piling onto one point), groups them by pack key (samples that change a shape, such as the width, cannot share a
pack), and tells Optuna each member's own value when its pack ends: the value at its last epoch, as a solo tuning
trial's (NaN, a diverged member: failed).

ASHA cannot stop one member through Tune, to which a pack is one trial. `MemberRungs` keeps ASHA's rungs for every
member of a variant's packs instead, in a small Ray actor the pack trials ask after each epoch: at a rung, a member
whose value is not within the best 1/reduction_factor of the values recorded there before it is stopped and leaves
its pack (asynchronous successive halving, as Ray's ASHAScheduler decides for solo trials).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import optuna
from ray.tune.search import Searcher

from search_spaces import SearchSpace

from .packing import PlannedPack, plan_packs
from .trainable import ENDED, MEMBER_VALUES, PACK, SAMPLES, VARIANT, TrialContext, trial_params, tuning_plan


def liar_sampler(seed: int) -> optuna.samplers.TPESampler:
    """TPE, seeded, with the constant liar: what a searcher asking for several samples before any has ended needs."""
    with warnings.catch_warnings():  # constant_liar is marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def fail_abandoned(study: optuna.Study) -> int:
    """Tell the study that samples left running by an earlier, interrupted run failed (the driver lock makes sure no
    other run has them), so that the constant liar does not count them; how many."""
    abandoned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in abandoned:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(abandoned)


class _MembersAsTrials(Searcher):
    """What both pack searchers share: each member of a pack that Tune runs is a trial of `study`, told its value as
    soon as a report of its pack says it ended (finished, stopped at an ASHA rung, or diverged: failed), so that an
    interrupted run leaves no ended member running in the study, and the others when the pack ends."""

    def __init__(self, study: optuna.Study, metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.study = study
        self.running: dict[str, dict[int, optuna.Trial]] = {}  # Tune's trial id → its members not yet told, by place

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        members = self.running.get(trial_id, {})
        for place in [place for place in members if f"{ENDED}/{place}" in result]:  # Tune flattens what it hands on
            _tell(self.study, members.pop(place), result, place)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Each member's value to Optuna: its last one, or failed (diverged, or the whole pack failed)."""
        for place, trial in self.running.pop(trial_id, {}).items():
            _tell(self.study, trial, result, place)


class PackSearch(_MembersAsTrials):
    """Hands Tune one tuning pack per trial: `samples` samples of `space` for `variant_key`, asked from `study` up to
    `size` at a time; each sample is a trial of the experiment `context` describes (trainable.tuning_plan)."""

    def __init__(self, study: optuna.Study, space: SearchSpace, variant_key: str, samples: int, size: int,
                 context: TrialContext, metric: str, mode: str) -> None:
        super().__init__(study, metric, mode)
        self.space, self.variant_key, self.size, self.context = space, variant_key, size, context
        self.left = samples  # not yet asked of Optuna
        self.ready: list[list[optuna.Trial]] = []  # asked, in packs, not yet handed to Tune

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self.ready:
            if self.left == 0:
                return Searcher.FINISHED
            self._ask(min(self.size, self.left))
        members = self.ready.pop(0)
        self.running[trial_id] = dict(enumerate(members))
        numbers = [trial.number for trial in members]
        return {PACK: f"pack-{self.variant_key},samples={'+'.join(map(str, numbers))}", VARIANT: self.variant_key,
                SAMPLES: [{"number": trial.number, "params": dict(trial.params)} for trial in members]}

    def _ask(self, count: int) -> None:
        """`count` samples, one after another (each sampled before the next is asked: the constant liar sees it),
        into packs of one pack key each."""
        asked = []
        for _ in range(count):
            trial = self.study.ask()
            self.space.define_by_run(trial)
            asked.append(trial)
        self.left -= count
        by_key = {f"{self.variant_key},sample={trial.number}": trial for trial in asked}
        plans = [tuning_plan(self.context, self.variant_key, dict(trial.params), trial.number) for trial in asked]
        self.ready += [[by_key[plan.trial_key] for plan in pack.members] for pack in plan_packs(plans, self.size)]

    def save(self, checkpoint_path: str) -> None:
        """Nothing to write: a rerun resumes the tuning from the Optuna journal, which holds every sample and its
        value, never from Tune's experiment state (Tune asks anyway, and warns of a searcher that cannot)."""


class PlannedPackSearch(_MembersAsTrials):
    """Hands Tune the planned `packs`, one per trial; each member is a trial of `study` (a study of planned trials,
    runner._PlannedOnly) with its factors and seed as parameters, running while its pack trains, then told the
    member's own value, as Ray's OptunaSearch tells a solo trial's."""

    def __init__(self, study: optuna.Study, packs: list[PlannedPack], metric: str, mode: str) -> None:
        super().__init__(study, metric, mode)
        self.waiting = list(packs)
        params = [trial_params(plan) for pack in packs for plan in pack.members]
        # the values the planned trials take, as Ray's OptunaSearch makes a Tune choice of them
        self.distributions = {name: optuna.distributions.CategoricalDistribution(
            list(dict.fromkeys(p[name] for p in params))) for name in params[0]} if params else {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self.waiting:
            return Searcher.FINISHED
        pack = self.waiting.pop(0)
        members = []
        for plan in pack.members:
            self.study.enqueue_trial(trial_params(plan))  # the member's own values, not the sampler's
            members.append(self.study.ask(self.distributions))
        self.running[trial_id] = dict(enumerate(members))
        return {PACK: pack.name}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to write: a rerun plans what is left from the trial records, in a study of its own."""


def _tell(study: optuna.Study, trial: optuna.Trial, result: dict[str, Any] | None, place: int) -> None:
    """The member at `place` its value from a report of its pack (MEMBER_VALUES, as Tune hands a searcher its results,
    flattened: `member_values/<place>`); none (it diverged, or the pack failed): failed."""
    value = (result or {}).get(f"{MEMBER_VALUES}/{place}")
    if isinstance(value, (int, float)) and math.isfinite(value):
        study.tell(trial, float(value))
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


class MemberRungs:
    """ASHA's rungs for pack members: after `grace_period` epochs, then every `reduction_factor` times as many, up to
    (not including) `epochs`, a member continues only if its value is within the best 1/reduction_factor of those
    recorded at that rung before it. Made a Ray actor by the runner (`ray.remote(MemberRungs)`)."""

    def __init__(self, epochs: int, grace_period: int, reduction_factor: int, mode: str) -> None:
        self.reduction_factor, self.mode = reduction_factor, mode
        milestones, rung = [], grace_period
        while rung < epochs:
            milestones.append(rung)
            rung *= reduction_factor
        self.recorded: dict[int, list[float]] = {milestone: [] for milestone in milestones}

    def keep(self, epoch: int, value: float) -> bool:
        """Whether a member that reached `epoch` with `value` trains on; NaN never does."""
        if epoch not in self.recorded:
            return True
        earlier = self.recorded[epoch]
        earlier.append(value)
        if math.isnan(value):
            return False
        finite = [v for v in earlier[:-1] if not math.isnan(v)]
        if not finite:
            return True
        best_share = 100 / self.reduction_factor
        if self.mode == "max":
            return value >= float(np.percentile(finite, 100 - best_share))
        return value <= float(np.percentile(finite, best_share))
