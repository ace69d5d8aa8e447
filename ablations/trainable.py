"""The Ray Tune trainable: one trial = one `mmn.train.fit`, reporting every epoch with a checkpoint.

A trial's config from the searcher is small: the factor values and seed of a planned trial (grid and final phases,
`trial_params`), or the sampled values plus the variant (tuning phase). Everything else travels once per experiment
in `TrialContext` through the object store. Each trial's record (mmn.folders.RESULT) says what the trial was given
(CPUs, GPU share, the GPUs Ray assigned), the fingerprints of the code and data the runner saw, and the provenance
(versions, git, GPU, the driver's command line).
"""
from __future__ import annotations

import json
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow.fs as pafs
import ray
import torch
from ray import tune
from tensorboardX import SummaryWriter

from mmn.atomic import write_bytes
from mmn.folders import CHECKPOINT, RECORDED_METRICS, RESULT, TRIAL_STATE
from mmn.model.registry import import_user_modules
from mmn.provenance import provenance
from mmn.train import PackMember, TrainingDiverged, error_line, fit, fit_pack

from .expand import TrialPlan, build_config
from .storage import Location, read_json, write_json_at

SEED = "train.seed"  # the seed's name among a planned trial's parameters, beside the factors' dotted keys
PACK = "pack"  # a pack trial's parameter: the pack's name
VARIANT = "variant_key"  # a tuning trial's variant
SAMPLES = "samples"  # a tuning pack's members: [{"number": Optuna's trial number, "params": sampled values}, ...]
DIVERGED = "diverged"  # the report of a trial (or pack) that diverged: why, as its record says (the console shows it)
ENDED = "ended"  # a pack's report: {place: finished | stopped | failed} of the members that ended with it
MEMBER_VALUES = "member_values"  # a pack's report: {place: latest value of the metric} of the members that have one


@dataclass(frozen=True)
class TrialContext:
    experiment: str
    budget: str
    common: Mapping[str, Any]  # overrides shared by every trial (spec base, budget, command line)
    variants: Mapping[str, Mapping[str, Any]]  # variant key → its overrides (factor values and rules)
    variant_values: Mapping[str, Mapping[str, Any]]  # variant key → factor values
    phase: str = "grid"  # grid (every variant × seed), tune (search samples) or final (the best, on every seed)
    planned: Mapping[str, TrialPlan] = field(default_factory=dict)  # trial key → its plan (grid and final phases)
    resume_from: Mapping[str, str] = field(default_factory=dict)  # config hash → checkpoint folder of a past run
    packs: Mapping[str, tuple[TrialPlan, ...]] = field(default_factory=dict)  # name → members (ablations.packing)
    resources: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})  # each trial's request
    threads: int = 1
    tune_seed: int = 1
    fingerprints: Mapping[str, str] = field(default_factory=dict)  # code_fingerprint, data_fingerprint
    command: tuple[str, ...] = ()  # the driver's command line
    imports: tuple[str, ...] = ()  # the user's modules to import before building a config (mmn.model.registry)
    metric: str = "val_top1"  # the spec's metric: what a tuning pack reports per member (MEMBER_VALUES)
    rungs: Any = None  # a tuning pack's early stopping: ablations.pack_search.MemberRungs as a Ray actor, or None


def trial_params(plan: TrialPlan) -> dict[str, Any]:
    """A planned trial as Optuna parameters and Tune config: each factor's value (by its dotted key) and the seed."""
    return {**plan.variant, SEED: plan.seed}


def tuning_plan(context: TrialContext, variant_key: str, sampled: Mapping[str, Any],
                number: int | None = None) -> TrialPlan:
    """A tuning sample of `variant_key` as a trial: the experiment's settings, the variant's, the sampled values, on
    the tuning seed; `number` (Optuna's) names a pack member's folder."""
    overrides = {**context.common, **context.variants[variant_key], **sampled, SEED: context.tune_seed}
    config = build_config(context.budget, overrides, f"trial {variant_key}")
    return TrialPlan(trial_key=f"{variant_key},sample={number}", variant=context.variant_values[variant_key],
                     variant_key=variant_key, seed=context.tune_seed, overrides=overrides, config=config,
                     config_hash=config.hash(), sampled=dict(sampled))


def planned_trial(config: Mapping[str, Any], planned: Mapping[str, TrialPlan]) -> TrialPlan:
    """The planned trial whose parameters `config` holds."""
    for plan in planned.values():
        if trial_params(plan) == dict(config):
            return plan
    raise KeyError(f"no planned trial has the parameters {dict(config)}")


def _restore(checkpoint_dir: Path, config_hash: str, context: TrialContext, member: str = "") -> None:
    """Seed the trial's checkpoint folder from Ray (a retried trial) or from an interrupted earlier run.

    Ray copies checkpoints into storage without a rename, so one can be torn (the disk filled up, the copy was
    killed); such a file is dropped and the trial starts over, instead of failing on it at every retry. A pack's
    checkpoint holds one folder per `member`."""
    target = checkpoint_dir / CHECKPOINT
    try:
        _copy_checkpoint(checkpoint_dir, config_hash, context, member)
        if target.exists():
            torch.load(target, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint means: start over
        print(f"[ablations] the checkpoint to resume from is unreadable ({type(error).__name__}: "
              f"{str(error).splitlines()[0][:200] if str(error) else ''}); this trial starts over", file=sys.stderr)
        target.unlink(missing_ok=True)


def _copy_checkpoint(checkpoint_dir: Path, config_hash: str, context: TrialContext, member: str) -> None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            source = Path(folder) / member / CHECKPOINT
            if source.exists():  # a pack's member that had not saved an epoch yet has none
                write_bytes(checkpoint_dir / CHECKPOINT, source.read_bytes())
        return
    source = context.resume_from.get(config_hash)
    if source:
        fs, path = pafs.FileSystem.from_uri(source) if "://" in source else (pafs.LocalFileSystem(), source)
        with fs.open_input_stream(f"{path}/{CHECKPOINT}") as stream:
            write_bytes(checkpoint_dir / CHECKPOINT, stream.read())


def _result_dir() -> Path:
    """Where the trial's record and its checkpoint (TRIAL_STATE) go: straight into the experiment folder when it is a
    local or NFS path (so nothing is lost if the driver dies, and Ray's periodic copy of the staging folders never
    lists a checkpoint's temporary file that is renamed before it is read), else the trial's staging folder, which
    Ray uploads."""
    context = tune.get_context()
    storage = context.get_storage()
    if storage is not None and isinstance(storage.storage_filesystem, pafs.LocalFileSystem):
        folder = Path(storage.trial_fs_path)
    else:
        folder = Path(context.get_trial_dir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _given() -> dict[str, Any]:
    """What Ray gave this trial: CPUs, GPU share and the ids of the GPUs it made visible."""
    granted = tune.get_context().get_trial_resources().required_resources
    return {"cpu": granted.get("CPU", 0), "gpu": granted.get("GPU", 0), "gpu_ids": list(ray.get_gpu_ids())}


def _extra(context: TrialContext, variant_key: str, variant: Mapping[str, Any], sampled: Mapping[str, Any],
           device: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """What a trial's record says besides the training: experiment, variant, trial id, resources, provenance."""
    trial_context = tune.get_context()
    return {"experiment": context.experiment, "trial_id": trial_context.get_trial_id(),
            "node_id": ray.get_runtime_context().get_node_id(), "variant": dict(variant), "variant_key": variant_key,
            "search": {"phase": context.phase, "sampled": dict(sampled)} if sampled or context.phase == "tune"
            else None, "resources": dict(given), **context.fingerprints,
            "provenance": provenance(device, context.command)}


def _no_cuda_warning(given: Mapping[str, Any], device: str) -> None:
    if given["gpu"] and device == "auto" and not torch.cuda.is_available():
        print(f"[ablations] Ray gave this trial GPU {given['gpu_ids']} but torch sees no CUDA device (a CPU build of "
              f"torch {torch.__version__}?): it trains on the CPU", file=sys.stderr)


def pack_plans(config: Mapping[str, Any], context: TrialContext) -> list[TrialPlan]:
    """The members of the pack trial with Tune config `config`, in pack order: a planned pack's (context.packs), or a
    tuning pack's samples (SAMPLES)."""
    if config[PACK] in context.packs:
        return list(context.packs[config[PACK]])
    return [tuning_plan(context, config[VARIANT], s["params"], s["number"]) for s in config[SAMPLES]]


def _run_pack(config: Mapping[str, Any], context: TrialContext) -> None:
    """A pack trial: its members train as one fused model (mmn.train.fit_pack), each into its own folder inside the
    pack's; one checkpoint per epoch holds every member's. Tune hears, per epoch, the members' mean metrics, each
    member's own (`member/<i>/<metric>`, i its place in the pack), the members that ended with it (`ended`: finished,
    stopped, or failed: diverged since the last report), so that W&B and MLflow log each member as a run of its own
    (ablations.loggers), and each member's latest value of the metric (MEMBER_VALUES, for the searchers). Each
    member's folder also gets its own TensorBoard file, as a solo trial's has. A tuning pack's members are Optuna's
    samples, and `context.rungs` may stop a member at an ASHA rung; it then leaves."""
    name, plans = config[PACK], pack_plans(config, context)
    results_root, given = _result_dir(), _given()
    state = results_root / TRIAL_STATE
    members, latest = [], [float("nan")] * len(plans)
    for index, plan in enumerate(plans):
        folder = member_folder(plan.trial_key)
        earlier = _ended(results_root / folder, context.metric)
        if earlier is not None:  # a retried pack: a member stopped or diverged before stays so
            latest[index] = earlier
            continue
        member_config = build_config(context.budget, {**plan.overrides, "train.threads": context.threads},
                                     f"trial {plan.variant_key}")
        checkpoint_dir = state / folder
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        _restore(checkpoint_dir, member_config.hash(), context, folder)
        extra = {**_extra(context, plan.variant_key, plan.variant, plan.sampled, member_config.train.device, given),
                 "pack": {"name": name, "members": [p.trial_key for p in plans]}}
        members.append((index, PackMember(member_config, checkpoint_dir, results_root / folder, extra)))
    if not members:  # a retried pack whose members all ended before; Tune refuses a result without its metric
        tune.report({**{metric: float("nan") for metric in RECORDED_METRICS}, "epoch": 0, "members": 0,
                     MEMBER_VALUES: _known(latest)})
        return
    _no_cuda_warning(given, members[0][1].config.train.device)
    indices = [index for index, _ in members]
    events = {index: SummaryWriter(str(member.out_dir)) for index, member in members}
    last: dict[str, Any] = {}
    epochs = members[0][1].config.train.epochs
    heard: set[int] = set()  # the members an epoch's report named
    failed: set[int] = set()  # the members a report said diverged

    def report(epoch: int, records: dict[int, dict[str, Any]]) -> list[int]:
        records = {indices[i]: record for i, record in records.items()}  # by the pack's member order
        heard.update(records)
        for index, record in records.items():
            latest[index] = record.get(context.metric, float("nan"))
            _write_scalars(events[index], record, epoch)
        stop = _stopped_at_rung(context, epoch, records)
        last.update(_means(records.values()), epoch=epoch, members=len(records) - len(stop))
        own = {str(index): {key: r[key] for key in RECORDED_METRICS if key in r} for index, r in records.items()}
        final = epoch == epochs
        ended = {str(index): "finished" if final else "stopped" for index in records if final or index in stop}
        # a member that diverged since the last report (fit_pack dropped it; its record says so) ends now
        for index in set(indices) - set(records) - failed:
            if _diverged(_record(results_root / member_folder(plans[index].trial_key)) or {}):
                failed.add(index)
                latest[index], ended[str(index)] = float("nan"), "failed"
        tune.report({**last, "member": own, ENDED: ended, MEMBER_VALUES: _known(latest)},
                    checkpoint=tune.Checkpoint.from_directory(str(state)))
        return [indices.index(index) for index in stop]

    try:
        # a pack given part of a GPU keeps within its part: another trial's pack may share the GPU
        results = fit_pack([member for _, member in members], on_epoch_end=report,
                           gpu_share=min(given["gpu"], 1.0) or 1.0)
    finally:
        for writer in events.values():
            writer.close()
    # A member resumed after its last epoch (its record was not yet finished) trained nothing, so no epoch's report
    # named it: the last report does, as a solo trial in that case reports its final values.
    unheard = {index: result["final"] for index, result in zip(indices, results)
               if result["status"] == "finished" and index not in heard}
    for index, result in zip(indices, results):
        if result["status"] == "failed":
            latest[index] = float("nan")
        elif index in unheard:
            latest[index] = unheard[index].get(context.metric, float("nan"))
    if all(r["status"] == "failed" for r in results):  # every member diverged: end as a diverged solo trial does
        tune.report({**{metric: float("nan") for metric in RECORDED_METRICS}, DIVERGED: results[0]["error"],
                     MEMBER_VALUES: _known(latest)})
    elif unheard or any(r["status"] == "failed" and index not in failed for index, r in zip(indices, results)):
        # the searchers (ablations.pack_search) hear how every member ended, one that diverged after the last
        # report included; trackers (ablations.loggers) hear the unheard members' values and end
        tune.report({**(last or {**_means(unheard.values()), "epoch": epochs, "members": 0}),
                     "member": {str(index): final for index, final in unheard.items()},
                     ENDED: {**{str(index): "finished" for index in unheard},
                               **{str(index): "failed" for index, r in zip(indices, results)
                                  if r["status"] == "failed" and index not in failed}},
                     MEMBER_VALUES: _known(latest)})


def _known(latest: list[float]) -> dict[str, float]:
    """The members' latest values of the metric by place, without those that have none (not yet reported, or
    failed: NaN), which the searchers count as failed and TensorBoard would warn of at every report."""
    return {str(place): value for place, value in enumerate(latest) if math.isfinite(value)}


def _means(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The members' mean of each recorded metric that all of `records` hold: a pack's metric as Tune hears it."""
    records = list(records)
    return {key: sum(r[key] for r in records) / len(records) for key in RECORDED_METRICS
            if records and all(key in r for r in records)}


def _write_scalars(writer: SummaryWriter, record: Mapping[str, Any], epoch: int) -> None:
    """A pack member's epoch into its own TensorBoard file, under the tags Tune's logger gives a solo trial's."""
    for key, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"ray/tune/{key}", value, global_step=epoch)
    writer.flush()


def _ended(folder: Path, metric: str) -> float | None:
    """A pack member's last value of its metric when its record says it stopped or diverged before (NaN), else None:
    it trains. A member that failed with its pack (an error Tune retries the pack for) trains again."""
    record = _record(folder) or {}
    if _diverged(record):
        return float("nan")
    if record.get("status") == "stopped":
        return float((record.get("final") or {}).get(metric, float("nan")))
    return None


def _diverged(record: Mapping[str, Any]) -> bool:
    """Whether a trial record says its run diverged (mmn.train.TrainingDiverged): for good, as a retry would again."""
    return record.get("status") == "failed" and str(record.get("error")).startswith(f"{TrainingDiverged.__name__}:")


def _record(folder: Path) -> dict[str, Any] | None:
    """The trial record in `folder`, or None where there is none (yet) or it does not read."""
    try:
        return json.loads((folder / RESULT).read_text())
    except (OSError, ValueError):
        return None


def _stopped_at_rung(context: TrialContext, epoch: int, records: Mapping[int, Mapping[str, Any]]) -> list[int]:
    """The members that ASHA's rungs (context.rungs) stop after `epoch`, asked in member order."""
    if context.rungs is None:
        return []
    keeps = ray.get([context.rungs.keep.remote(epoch, r.get(context.metric, float("nan"))) for r in records.values()])
    return [index for index, keep in zip(records, keeps) if not keep]


def member_folder(trial_key: str) -> str:
    """A pack member's folder name: its trial key, with what a filesystem cannot hold replaced."""
    return re.sub(r"[^\w.,=+-]", "_", trial_key)[:200]


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    import_user_modules(context.imports)  # what the user named (--import, the spec's imports:), as the driver did
    if PACK in config:
        return _run_pack(config, context)
    if context.phase != "tune":  # grid or final phase: a planned trial
        plan = planned_trial(config, context.planned)
    else:  # tuning phase: the sampled values arrive as dotted keys
        plan = tuning_plan(context, config[VARIANT], {k: v for k, v in config.items() if "." in k})
    run_config = build_config(context.budget, {**plan.overrides, "train.threads": context.threads},
                              f"trial {plan.variant_key}")
    checkpoint_dir = _result_dir() / TRIAL_STATE
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    _restore(checkpoint_dir, run_config.hash(), context)

    reported: list[int] = []  # the epochs reported to Tune by this run
    last: list[tuple[dict[str, Any], Path | None]] = []

    def report(record: dict[str, Any], folder: Path | None) -> None:
        reported.append(record["epoch"])
        if record["epoch"] == run_config.train.epochs:  # Tune hears it once the record says finished (below)
            last.append((record, folder))
            return
        tune.report(record, checkpoint=tune.Checkpoint.from_directory(str(folder)))

    given = _given()
    _no_cuda_warning(given, run_config.train.device)
    extra = _extra(context, plan.variant_key, plan.variant, plan.sampled, run_config.train.device, given)
    try:
        result = fit(run_config, on_epoch=report, checkpoint_dir=checkpoint_dir, out_dir=_result_dir(), extra=extra,
                     progress=False)
        # The last epoch's result is reported after `fit` has marked the record finished: ASHA stops a trial on
        # hearing its last epoch (max_t), inside the report, and the record would otherwise stay "running".
        if last:
            tune.report(last[0][0], checkpoint=tune.Checkpoint.from_directory(str(last[0][1])))
        elif not reported:  # resumed after its last epoch (its driver died before Tune heard): report how it ended
            tune.report({"epoch": result["epochs_completed"], **result["final"]})
    except TrainingDiverged as error:
        # The trial's record already says failed and why. Retrying would diverge again at the same step, so end the
        # trial normally (Ray does not retry it) with NaN metrics (Optuna records a failed trial, ASHA ignores it).
        tune.report({**{metric: float("nan") for metric in RECORDED_METRICS},
                     DIVERGED: error_line(error)})


class EarlyStopped(tune.Callback):
    """Marks the record of a solo trial that the scheduler (ASHA) stopped as `stopped`, as a pack member's is
    (mmn.train.fit_pack): Tune ends such a trial inside its report, so the trial cannot say so itself, and its record
    would say `running` for good. A trial ending any other way has marked its record finished or failed before Tune
    hears of it; an interrupted run's trials are not completed, so they stay resumable. On local (or NFS) storage the
    mark is made at once; on an object store when the Tune invocation ends, after the stopped workers' last uploads
    of their folders, which would otherwise put `running` back."""

    def __init__(self) -> None:
        self.remote: list[Location] = []

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        storage = trial.storage
        if storage is None:
            return
        folder = Location(storage.storage_filesystem, storage.trial_fs_path, storage.trial_fs_path)
        if folder.is_local:
            _mark_stopped(folder)
        else:
            self.remote.append(folder)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        for folder in self.remote:  # Tune calls this once every trial's worker has stopped
            _mark_stopped(folder)
        self.remote.clear()


def _mark_stopped(folder: Location) -> None:
    """A record in `folder` that still says `running` says `stopped` after its last completed epoch."""
    try:
        record = read_json(folder.child(RESULT))
    except (OSError, ValueError):
        return
    if record.get("status") != "running":
        return
    ended = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json_at(folder.child(RESULT), {**record, "status": "stopped",
                                         "stopped_after_epoch": record.get("epochs_completed", 0), "ended": ended})


class StagingCleanup(tune.Callback):
    """Deletes this Tune invocation's staging folder in Ray's session temp folder on the driver
    (`<temp>/session_*/artifacts/<time>/<name>/`: Ray's per-trial logs and files, already copied to the experiment
    folder) once `Tuner.fit` has returned: `remove()`. Only the folders of this invocation's own trials."""

    def __init__(self) -> None:
        self.folders: set[Path] = set()

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.folders.update(Path(trial.storage.experiment_driver_staging_path).parent for trial in trials
                            if trial.storage is not None)

    def remove(self) -> None:
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        self.folders.clear()
