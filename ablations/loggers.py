"""Experiment trackers a run logs to besides its own files, as Ray Tune callbacks.

TensorBoard needs nothing here: Tune's default loggers write an event file into every trial folder
(`tensorboard --logdir runs/NAME`), and a trial pack writes one into each member's folder. Weights & Biases and
MLflow are optional (`--log wandb`, `--log mlflow`; the extras `mmn-ablate[wandb]` and `mmn-ablate[mlflow]`): each
trial becomes a run, in a W&B project or an MLflow experiment named after the experiment, grouped or tagged by its
Tune invocation (grid-..., tune-...). Ray's callbacks make one run per Tune trial; a trial pack (ablations.packing)
is one Tune trial, so `PerMember` makes each of its members the run its solo trial would have been instead.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# Light imports only: the CLI's parser reads TRACKERS, and building it must load neither Ray nor torch (nor wandb
# or mlflow, half a second each); what the callbacks need is imported where they are made or used.
if TYPE_CHECKING:
    from .expand import TrialPlan
    from .trainable import TrialContext

TRACKERS = {"wandb": "wandb", "mlflow": "mlflow"}  # --log name → the module it needs


class MissingTracker(ValueError):
    """A tracker was asked for whose package is not installed."""


def check_trackers(names: Sequence[str]) -> None:
    """Refuse, before anything runs, a tracker that is unknown or whose package is missing, with the fix."""
    for name in names:
        if name not in TRACKERS:
            raise MissingTracker(f"--log {name} is not a tracker; choose from {', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise MissingTracker(f"--log {name} needs the {TRACKERS[name]} package: pip install "
                                 f"'mmn-ablate[{name}]'")


def tracker_callbacks(names: Sequence[str], context: TrialContext, invocation: str) -> list[Any]:
    """A Tune callback for each named tracker: its runs go to the W&B project or MLflow experiment named after
    `context.experiment`, grouped (W&B) or tagged (MLflow) with `invocation`, the Tune invocation's name; a trial
    pack's members (from `context`) are runs of their own."""
    check_trackers(names)
    callbacks: list[Any] = []
    if "wandb" in names:
        callbacks.append(_wandb_callback(context, invocation))
    if "mlflow" in names:
        callbacks.append(_mlflow_callback(context, invocation))
    return callbacks


@dataclass(frozen=True)
class MemberTrial:
    """A member of a trial pack as Ray's tracker callbacks see a trial: its run is named by its trial key and its
    config holds what its solo trial's would (`solo_config`)."""

    trial_id: str  # the pack's Tune trial id and the member's place in it: unique, and W&B's run id
    name: str
    config: dict[str, Any] = field(compare=False)

    def __str__(self) -> str:
        return self.name


class PerMember:
    """Mixed into one of Ray's tracker callbacks (a LoggerCallback): a solo trial is logged as Ray logs it; a trial
    pack is no run, each of its members is the run its solo trial would be, opened when the pack starts (as Ray opens
    a solo trial's), with the member's own metrics each epoch. Its run ends when the pack's report says the member
    ended (ENDED, from ablations.trainable._run_pack): finished, stopped by ASHA's rungs, or failed (it diverged,
    fit_pack dropped it and its record says so); a member still open when the pack's trial ends failed with it. A
    pack that Tune retries after an error (max_failures) trains its members on from their checkpoints, and their
    runs go on too, as a retried solo trial's does; a member that ended before trains no more and gets no second
    run. A tracker implements start_members, log_member and end_member."""

    def __init__(self, context: TrialContext, **kwargs: Any) -> None:
        from ray.tune.result import AUTO_RESULT_KEYS

        super().__init__(**kwargs)
        self.context = context
        # The keys of a pack's report that are Tune's own (iteration, times, host), which each member's run shares;
        # its metrics are the members' mean, each member's own are under "member" (ablations.trainable._run_pack).
        self.shared_keys = set(AUTO_RESULT_KEYS) - {"config"} | {"trial_id", "experiment_tag", "done"}
        self.members: dict[str, dict[str, MemberTrial]] = {}  # pack trial id → the member at each place
        self.open: dict[str, set[MemberTrial]] = {}  # pack trial id → its members whose runs are open
        self.ended: set[MemberTrial] = set()

    def start_members(self, trial: Any, members: list[MemberTrial]) -> None:
        """Open a run for each of `members` of the pack `trial`."""
        raise NotImplementedError

    def log_member(self, trial: Any, member: MemberTrial, result: dict[str, Any]) -> None:
        """Log one epoch of `member`'s, a result as its solo trial's would be (Tune's keys, its metrics, its config)."""
        raise NotImplementedError

    def end_member(self, trial: Any, member: MemberTrial, failed: bool) -> None:
        """End `member`'s run."""
        raise NotImplementedError

    def log_trial_start(self, trial: Any) -> None:
        if not _is_pack(trial):
            return super().log_trial_start(trial)
        opened = self.open.setdefault(trial.trial_id, set())
        known = opened | self.ended
        fresh = [member for member in self._members(trial).values() if member not in known]
        if fresh:
            self.start_members(trial, fresh)
            opened.update(fresh)

    def log_trial_save(self, trial: Any) -> None:
        if not _is_pack(trial):
            super().log_trial_save(trial)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        from .trainable import ENDED

        if not _is_pack(trial):
            return super().log_trial_result(iteration, trial, result)
        if trial.trial_id not in self.open:
            self.log_trial_start(trial)
        members, opened = self._members(trial), self.open[trial.trial_id]
        shared = {key: value for key, value in result.items() if key in self.shared_keys}
        for place, metrics in (result.get("member") or {}).items():
            if members[place] in opened:
                self.log_member(trial, members[place], {**shared, "epoch": result["epoch"], **metrics,
                                                        "config": members[place].config})
        for place, how in (result.get(ENDED) or {}).items():  # finished, stopped (as a solo run) or failed
            if members[place] in opened:
                self._end(trial, members[place], failed=how == "failed")

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if not _is_pack(trial):
            return super().log_trial_end(trial, failed)
        # Ended normally, the pack leaves open only members that diverged; ended by an error (which Tune may retry),
        # its members still training fail with it, for now: a retry opens their runs again (log_trial_start).
        for member in sorted(self.open.get(trial.trial_id, ()), key=str):
            self._end(trial, member, failed=True, for_good=not failed)

    def _end(self, trial: Any, member: MemberTrial, failed: bool, for_good: bool = True) -> None:
        self.end_member(trial, member, failed)
        self.open[trial.trial_id].discard(member)
        if for_good:
            self.ended.add(member)

    def _members(self, trial: Any) -> dict[str, MemberTrial]:
        """The pack's members by their place in it (the keys of its reports' "member")."""
        from .trainable import pack_plans

        if trial.trial_id not in self.members:
            self.members[trial.trial_id] = {
                str(place): MemberTrial(f"{trial.trial_id}-{place}", plan.trial_key,
                                        solo_config(plan, self.context.phase))
                for place, plan in enumerate(pack_plans(trial.config, self.context))}
        return self.members[trial.trial_id]


def solo_config(plan: TrialPlan, phase: str) -> dict[str, Any]:
    """The Tune config `plan` has as a solo trial: a planned trial's factors and seed, a tuning sample's variant and
    sampled values."""
    from .trainable import VARIANT, trial_params

    return {VARIANT: plan.variant_key, **plan.sampled} if phase == "tune" else trial_params(plan)


def _is_pack(trial: Any) -> bool:
    from .trainable import PACK

    return PACK in trial.config


def _wandb_callback(context: TrialContext, invocation: str) -> Any:
    """Ray's W&B callback, with a trial pack's members as runs of their own.

    Ray logs each trial's run from a Ray actor of its own on the driver's node (wandb wants a process per run), fed
    through a queue; a pack gets one such actor too, with a run per member in it (wandb's reinit="create_new"), so a
    pack of eight costs two processes (its actor and queue), not sixteen."""
    from ray.air.constants import TRAINING_ITERATION
    from ray.air.integrations.wandb import WandbLoggerCallback, _clean_log
    from ray.air.integrations.wandb import _QueueItem, _WandbLoggingActor  # Ray's actor, and its queue's items

    class RunsActor(_WandbLoggingActor):
        """Ray's W&B logging actor; given `members` (a pack's: each run's key and wandb.init arguments), it holds a run
        per member, and queue items carry a member's key: (RESULT, (key, result)), (END, (key, failed)); (END, None)
        ends every run and the actor, as Ray's does."""

        def __init__(self, *args: Any, members: dict[str, dict[str, Any]] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.members = members

        def run(self) -> None:
            if self.members is None:
                return super().run()
            os.environ["WANDB_START_METHOD"] = "thread"
            runs = {key: self._wandb.init(**arguments) for key, arguments in self.members.items()}
            for run in runs.values():
                run.config.trial_log_path = self._logdir
            while True:
                kind, content = self.queue.get()
                if kind == _QueueItem.END and content is None:
                    break
                if kind == _QueueItem.END:
                    key, failed = content
                    runs.pop(key).finish(exit_code=int(failed))  # W&B shows a failed member's run as failed
                elif kind == _QueueItem.RESULT:
                    key, result = content
                    log, config_update = self._handle_result(result)
                    runs[key].config.update(config_update, allow_val_change=True)
                    runs[key].log(log, step=log.get(TRAINING_ITERATION))
            for run in runs.values():
                run.finish()

    class WandbPerMember(PerMember, WandbLoggerCallback):
        _logger_actor_cls = RunsActor

        def start_members(self, trial: Any, members: list[MemberTrial]) -> None:
            # as Ray's log_trial_start sets up a solo trial's run
            excluded = [*self._exclude_results, *self.excludes, *([] if self.log_config else ["config"])]
            arguments = {member.trial_id: {
                "id": member.trial_id, "name": member.name, "resume": False, "reinit": "create_new",
                "allow_val_change": True, "group": self.group or trial.experiment_dir_name, "project": self.project,
                "config": _clean_log(member.config), **self.kwargs} for member in members}
            self._start_logging_actor(trial, excluded, members=arguments)

        def log_member(self, trial: Any, member: MemberTrial, result: dict[str, Any]) -> None:
            self._trial_queues[trial].put((_QueueItem.RESULT, (member.trial_id, _clean_log(result))))

        def end_member(self, trial: Any, member: MemberTrial, failed: bool) -> None:
            self._trial_queues[trial].put((_QueueItem.END, (member.trial_id, failed)))

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            super().log_trial_end(trial, failed)
            if _is_pack(trial) and trial in self._trial_queues:  # every member's run has ended: so does the actor
                WandbLoggerCallback.log_trial_end(self, trial, failed)

    return WandbPerMember(context, project=context.experiment, group=invocation, **_wandb_settings())


def _wandb_settings() -> dict[str, str]:
    """The driver's WANDB_MODE (offline, say) and WANDB_DIR as wandb.init arguments: W&B logs from a Ray actor,
    whose environment is the cluster's (started earlier, or elsewhere with --address), not the driver's."""
    settings = {"mode": os.environ.get("WANDB_MODE"), "dir": os.environ.get("WANDB_DIR")}
    return {key: value for key, value in settings.items() if value}


def _mlflow_callback(context: TrialContext, invocation: str) -> Any:
    """Ray's MLflow callback (on the driver), with a trial pack's members as runs of their own, each epoch their
    step; a member's run is made and ended by Ray's own code, given the member as a trial (MemberTrial)."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MLflowPerMember(PerMember, MLflowLoggerCallback):
        def start_members(self, trial: Any, members: list[MemberTrial]) -> None:
            for member in members:
                MLflowLoggerCallback.log_trial_start(self, member)

        def log_member(self, trial: Any, member: MemberTrial, result: dict[str, Any]) -> None:
            self.mlflow_util.log_metrics(run_id=self._trial_runs[member], metrics_to_log=result, step=result["epoch"])

        def end_member(self, trial: Any, member: MemberTrial, failed: bool) -> None:
            MLflowLoggerCallback.log_trial_end(self, member, failed)

    # The tracking URI is MLflow's own choice: MLFLOW_TRACKING_URI, else its local default.
    return MLflowPerMember(context, experiment_name=context.experiment, tags={"invocation": invocation})
