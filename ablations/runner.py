"""Running an experiment on Ray Tune: the grid of variants × seeds exactly once each, optional fair tuning of every
variant first, and resumption that never repeats or loses a finished trial.

Resumption works from the files alone: every trial's record (mmn.folders.RESULT) carries its config hash, so a
rerun (or `--resume`) scans the experiment folder, skips the hashes already finished and restarts the unfinished
ones from their last checkpoint. It also carries fingerprints of the code and the data it trained with
(mmn.provenance): finished results of other code or data are not mixed with new ones unless the user says how
(`stale`: train them again, or keep them and say so in experiment.json).

`run_experiment` reads as its steps: open the experiment folder, plan the trials, prepare the data and take the
fingerprints, refuse stale results, start Ray and choose each trial's resources, tune (for specs that search), run
what is not finished, and collect the outcome. Process-wide settings it needs (environment variables Ray reads, a
logger's level, a Ray instance it started) are restored when it returns.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import re
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Mapping

import optuna
import pyarrow.fs as pafs
import ray
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from mmn.atomic import write_bytes, write_text
from mmn.data.formats import read_split
from mmn.data.synthetic import ensure_synthetic, split_counts
from mmn.folders import CHECKPOINT, EXPERIMENT, EXPERIMENT_FORMAT, RESULT, SPEC_AS_RUN, STUDY, TRIAL_STATE, record_paths
from mmn.provenance import code_fingerprint, data_fingerprint
from search_spaces import load_search_space

from .console import LOG, verbose
from .expand import TrialPlan, base_overrides, build_config, expand, resolve_seeds, variant_key, variant_overrides, \
    variants
from .loggers import check_trackers, tracker_callbacks
from .progress import TrialProgress
from .resources import TrialResources, cpu_epoch_estimate, meant_for_gpus, trial_resources
from .rounds import run_rounds, seeds_until_decided
from .spec import SeedsUntilDecided, Spec, SpecError
from .storage import Location, cannot_write, check_experiment_name, check_format, locate, read_json, \
    write_json_at
from .interrupt import Interrupted, SignalStop, stop_on_signals
from .lock import driver_lock
from .packing import pack_size, plan_packs
from .pack_search import MemberRungs, PackSearch, PlannedPackSearch, fail_abandoned, liar_sampler
from .trainable import PACK, VARIANT, EarlyStopped, StagingCleanup, TrialContext, planned_trial, run_trial, \
    trial_params


@dataclass
class RunOptions:
    budget: str = "quick"
    dataset: str | None = None
    data_root: str | None = None
    modality: str | None = None
    seeds: int | list[int] | None = None
    until: SeedsUntilDecided | None = None  # --seeds MIN..MAX: seeds 1..MAX added until decided (ablations.rounds)
    epochs: int | None = None
    samples: int | None = None
    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    storage: str = "runs"
    name: str | None = None
    max_failures: int = 2
    overrides: dict[str, Any] = field(default_factory=dict)
    stale: str | None = None  # finished results of other code or data: "rerun", "keep", or None to refuse them
    log: tuple[str, ...] = ()  # trackers besides TensorBoard: "wandb", "mlflow" (ablations.loggers)
    force_spec: bool = False  # replace the experiment.json of another spec under this name
    pack: str | int = "auto"  # trial packs: auto, off, or members per pack (ablations.packing)
    imports: tuple[str, ...] = ()  # the user's modules named by --import, imported already (mmn.model.registry)

    def cli_overrides(self) -> dict[str, Any]:
        values = {"data.dataset": self.dataset, "data.root": self.data_root, "data.modality": self.modality,
                  "train.epochs": self.epochs}
        chosen = {key: value for key, value in values.items() if value is not None}
        if self.epochs is not None:  # keep the warmup inside a shortened run
            chosen["train.warmup_epochs"] = min(self.epochs, _budget_warmup(self))
        return {**chosen, **self.overrides}


def _budget_warmup(options: RunOptions) -> int:
    return build_config(options.budget, {}, "budget").train.warmup_epochs


@dataclass
class Outcome:
    experiment: Location
    planned: int
    skipped: int
    finished: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    problem: str | None = None  # why trials could not finish, when it is the storage (e.g. the disk is full)
    kept_stale: int = 0  # finished results of other code or data reused (--keep-stale)


class StaleResults(ValueError):
    """Finished results of other code or data than this run's, and no word on what to do with them."""


CODE, DATA = "code_fingerprint", "data_fingerprint"  # the keys of a trial's record that say what it trained with


def _say(message: str) -> None:
    LOG.info(message)


def scan_results(experiment: Location, fingerprints: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """config hash → the trial record that counts for it, with its folder under key `_dir`: one with these
    `fingerprints` (this run's code and data) over a stale one, then a finished one over an unfinished one, then
    the newest. Old folders' records, named result.json, count too (mmn.folders.record_paths)."""
    records: dict[str, dict[str, Any]] = {}
    if not experiment.exists():
        return records
    listing = experiment.fs.get_file_info(pafs.FileSelector(experiment.path, recursive=True))
    for path in record_paths(info.path for info in listing if info.type == pafs.FileType.File):
        try:
            record = read_json(Location(experiment.fs, path, path))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue  # a foreign or damaged file: the trial simply counts as not finished
        if not isinstance(record, dict) or "config_hash" not in record:
            continue
        record["_dir"] = path.rsplit("/", 1)[0]
        previous = records.get(record["config_hash"])
        if previous is None or _rank(record, fingerprints) > _rank(previous, fingerprints):
            records[record["config_hash"]] = record
    return records


def _current(record: Mapping[str, Any], fingerprints: Mapping[str, str] | None) -> bool:
    """Whether `record` trained with these fingerprints; one written before fingerprints existed did not."""
    return fingerprints is None or all(record.get(key) == value for key, value in fingerprints.items())


def _rank(record: Mapping[str, Any], fingerprints: Mapping[str, str] | None) -> tuple[bool, bool, str]:
    return _current(record, fingerprints), record.get("status") == "finished", str(record.get("started", ""))


def _latest_checkpoint(experiment: Location, folder: str) -> str | None:
    """The folder of the newest complete checkpoint of the trial whose record is in `folder`, to continue from.

    Newest first: the trial's own (`state/`, written atomically after every epoch; in the experiment folder when it
    is local), then the copies Ray made (`checkpoint_*`), which a killed copy can leave torn; for a pack's member (its
    folder inside the pack's) its part of the pack's. On local storage the first that loads is taken; on an object
    store, the first that exists."""
    parent, member = folder.rsplit("/", 1)
    candidates = [f"{folder}/{TRIAL_STATE}", f"{parent}/{TRIAL_STATE}/{member}",
                  *reversed(_checkpoints(experiment, folder)),
                  *(f"{c}/{member}" for c in reversed(_checkpoints(experiment, parent)))]
    for candidate in candidates:
        path = f"{candidate}/{CHECKPOINT}"
        if experiment.fs.get_file_info(path).type != pafs.FileType.File:
            continue
        if experiment.is_local and not _loads(path):
            continue
        return candidate if experiment.is_local else f"{experiment.uri.split('://')[0]}://{candidate}"
    return None


def _loads(path: str) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torn or foreign: any failure means not this one
        return False
    return True


def _checkpoints(experiment: Location, folder: str) -> list[str]:
    infos = experiment.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))


def plan_experiment(spec: Spec, options: RunOptions) -> list[TrialPlan]:
    return expand(spec, options.budget, options.cli_overrides(), options.seeds)


def _init_ray(options: RunOptions) -> bool:
    """Join or start Ray unless it already runs in this process; whether this call started it."""
    if ray.is_initialized():
        return False
    # Trials' output reaches the console only with -v; a failed trial's last lines always do (progress.TrialProgress).
    if options.address:
        ray.init(address=options.address, log_to_driver=verbose(), runtime_env=worker_runtime_env())
    else:
        ray.init(address="local", include_dashboard=False, log_to_driver=verbose(), runtime_env=worker_runtime_env())
    resources = ray.cluster_resources()
    _say(f"Ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    return True


def worker_runtime_env() -> dict[str, Any]:
    """The environment of this run's Ray workers (on every node, also when joining a cluster): glibc's malloc
    arenas capped at 2 unless the user set MALLOC_ARENA_MAX. Ray reuses a worker for many trials, and each of
    torch's threads otherwise gets an arena of its own that keeps the freed memory: about 100 MB more per trial,
    to ~2.6 GB for a tiny model (docs/performance.md, "Trial worker memory")."""
    return {"env_vars": {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}}


def _trial_resources(spec: Spec, options: RunOptions, plan: TrialPlan,
                     clips: tuple[int, int] | None) -> TrialResources:
    """What each trial asks for on this cluster, said in one line; a budget meant for GPUs that trains on CPUs
    says so, with a rough time per epoch."""
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    trials = trial_resources(spec, options.budget, plan.config.train.device, has_gpus, options.cpus_per_trial,
                             options.gpus_per_trial)
    if trials.gpu == 0 and meant_for_gpus(options.budget):
        why = "the cluster has no GPUs" if not has_gpus else "the trials ask for no GPU"
        # An autoscaling cluster shows no GPUs until GPU workers start, and it starts them for trials that ask.
        hint = "" if has_gpus else "; to wait for GPU workers that an autoscaler starts, pass --gpus-per-trial"
        _say(f"{why}: each trial trains on CPU ({trials.cpu:g} CPU); "
             f"{cpu_epoch_estimate(plan.config, clips, trials.cpu)}{hint}")
    elif trials.gpu > 0 and not has_gpus:
        _say(f"each trial asks for {trials}; the cluster has no GPUs now, so trials wait for GPU workers (an "
             f"autoscaler starts them)")
    else:
        _say(f"each trial gets {trials}")
    return trials


def _slots(resources: Mapping[str, float]) -> int:
    """How many trials asking for `resources` fit on the cluster at once."""
    cluster = ray.cluster_resources()
    fits = [cluster.get("CPU", 1) // resources["cpu"]]
    if resources["gpu"]:
        fits.append(cluster.get("GPU", 0) // resources["gpu"])
    return max(1, int(min(fits)))


@contextlib.contextmanager
def _process_settings() -> Iterator[None]:
    """What Ray and Tune need set in this process while an experiment runs, restored afterwards: the whole
    environment, as what Ray and Tune import sets variables too (tensorboardX: CRC32C_SW_MODE)."""
    snapshots = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"
    environment = {  # each unless the user chose
        "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0"),
        # Every epoch's checkpoint (num_to_keep=1) forces a snapshot of the experiment state, and Ray warns of each
        # snapshot within 5 s of the last: dozens of times a run. Its warning of a slow snapshot stays on.
        snapshots: os.environ.get(snapshots, "0"),
        # Tune's newer console output prints a box and a TensorBoard hint into Ray's temp folder even when told to
        # be silent; the older one is silent at verbose=0. -v keeps the newer one, tables and all.
        "RAY_AIR_NEW_OUTPUT": os.environ.get("RAY_AIR_NEW_OUTPUT", "1" if verbose() else "0"),
        # Ctrl-C is ours (ablations.interrupt): Tune's handler would list the running trials as failed and advise
        # Tuner.restore, where a rerun of the same command resumes.
        "TUNE_DISABLE_SIGINT_HANDLER": "1",
    }
    # Optuna announces each Tune invocation's new study; the runner's own lines say what runs (-v shows it).
    optuna_log = logging.getLogger("optuna")
    saved_environment, saved_level = dict(os.environ), optuna_log.level
    os.environ.update(environment)
    optuna_log.setLevel(logging.DEBUG if verbose() else logging.WARNING)
    try:
        yield
    finally:
        optuna_log.setLevel(saved_level)
        for name in os.environ.keys() - saved_environment.keys():
            del os.environ[name]
        os.environ.update({name: value for name, value in saved_environment.items() if os.environ.get(name) != value})


def _journal_path(experiment: Location) -> str:
    """The Optuna journal's file while running: in the experiment folder, or for remote storage (Optuna appends to a
    local file) in runs/<name>/ here, copied to the storage after each Tune invocation (`_publish_journal`)."""
    folder = experiment.path if experiment.is_local else os.path.join("runs", os.path.basename(experiment.path))
    return os.path.join(folder, STUDY)


def _journal(experiment: Location) -> optuna.storages.BaseStorage:
    """The experiment's Optuna storage. For remote storage without a local journal here (a rerun on another
    machine), the storage's copy is fetched first, so publishing this run's studies keeps the earlier ones."""
    path = _journal_path(experiment)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    published = experiment.child(STUDY)
    if not experiment.is_local and not os.path.exists(path) and published.exists():
        with experiment.fs.open_input_stream(published.path) as stream:
            write_bytes(path, stream.read())
    _drop_torn_tail(path)
    return JournalStorage(JournalFileBackend(path))


def _publish_journal(experiment: Location) -> None:
    """Copy the local journal to <storage>/<name>/study.journal when the storage is remote, so that a report built
    from the storage (or a copy of it) has the studies too; a failed copy is said, and the run goes on."""
    path = _journal_path(experiment)
    if experiment.is_local or not os.path.exists(path):
        return
    target = experiment.child(STUDY)
    try:
        with open(path, "rb") as journal, experiment.fs.open_output_stream(target.path) as stream:
            stream.write(journal.read())
    except OSError as error:
        _say(f"the Optuna journal {path} could not be copied to {target.uri} ({error}); copy it there by hand")


def _drop_torn_tail(path: str) -> None:
    """Cut a half-written last record (a run that died mid-append, e.g. on a full disk) off the Optuna journal:
    Optuna skips it while it is last, but the next record appended after it would make the journal unreadable."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as journal:
        size = journal.seek(0, os.SEEK_END)
        if size == 0:
            return
        journal.seek(size - 1)
        if journal.read(1) == b"\n":
            return
        journal.seek(0)
        data = journal.read()
        journal.truncate(data.rfind(b"\n") + 1)
        journal.flush()
        os.fsync(journal.fileno())


def _tune(context: TrialContext, search_alg: Any, num_samples: int, spec: Spec, options: RunOptions,
          experiment: Location, label: str, scheduler: Any = None, concurrency: int | None = None,
          param_space: Mapping[str, Any] | None = None) -> None:
    """One Tune invocation; the journal is published to remote storage afterwards, however it ended."""
    try:
        _fit(context, search_alg, num_samples, spec, options, experiment, label, scheduler, concurrency, param_space)
    finally:
        _publish_journal(experiment)


def _fit(context: TrialContext, search_alg: Any, num_samples: int, spec: Spec, options: RunOptions,
         experiment: Location, label: str, scheduler: Any, concurrency: int | None,
         param_space: Mapping[str, Any] | None) -> None:
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), dict(context.resources))
    staging = StagingCleanup()
    tuner = tune.Tuner(
        trainable,
        param_space=dict(param_space or {}),
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=num_samples, metric=spec.metric,
            # Each trial in a fresh worker process: a reused worker grew to 1.9x one trial's memory over 40 quick
            # trials, a fresh one stays at one trial's (docs/performance.md); it costs about 2 s of start-up a trial.
            mode=spec.mode, reuse_actors=False,
            # with a searcher and no limit Tune keeps only one trial pending, so say how many may run at once
            max_concurrent_trials=options.max_concurrent or concurrency or num_samples,
            trial_name_creator=lambda trial: _trial_name(trial, context),
            trial_dirname_creator=lambda trial: _folder_name(_trial_name(trial, context), trial.trial_id),
        ),
        run_config=tune.RunConfig(
            storage_path=experiment.uri, name=label,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # Tune's default loggers (JSON, CSV, TensorBoard) stay on; each trial's stdout and stderr go to files
            # in its working folder, for a failed trial's last lines. Ray's own tables only with -v.
            callbacks=[TrialProgress(num_samples, spec.metric), staging, *([EarlyStopped()] if scheduler else []),
                       *tracker_callbacks(options.log, context, label)],
            log_to_file=True, verbose=1 if verbose() else 0,
        ),
    )
    try:
        tuner.fit()
    except (OSError, pickle.UnpicklingError, EOFError) as error:
        # After the trials, Ray reads back its own files (e.g. pickled errors); on a full or failing disk those are
        # truncated. Results come from our trial records (written atomically), so go on and report from them.
        _say(f"Ray Tune could not finish its bookkeeping in {experiment.uri} ({type(error).__name__}: "
             f"{str(error).splitlines()[0] if str(error) else ''})")
    finally:
        staging.remove()  # Ray has copied it to the experiment folder; in the system temp it would stay for good


def _storage_problem(experiment: Location) -> str | None:
    """'cannot write to ...: no space left on device' when a small file cannot be written there now, else None."""
    if not experiment.is_local:
        return None
    probe = os.path.join(experiment.path, f".write-check-{os.getpid()}")
    try:
        write_text(probe, "{}")
        os.unlink(probe)
    except OSError as error:
        return str(cannot_write(experiment.uri, error))
    return None


def _trial_name(trial: Any, context: TrialContext) -> str:
    """A planned trial's key (msm=off,mtm=true,seed=1) in Tune's table, a pack's name (ablations.packing); a tuning
    trial's variant and Tune's id."""
    if PACK in trial.config:
        return trial.config[PACK]
    if context.phase == "tune":
        return f"{trial.config['variant_key']},{trial.trial_id}"
    return planned_trial(trial.config, context.planned).trial_key


def _folder_name(name: str, trial_id: str) -> str:
    """`name` as a trial folder's name, with the trial id added where characters had to be replaced (a factor value
    with a slash, say) or it is too long for a filesystem, so that folders stay unique."""
    safe = re.sub(r"[^\w.,=+-]", "_", name)
    return safe if safe == name and len(name) <= 200 else f"{safe[:160]}_{trial_id}"


class _PlannedOnly(optuna.samplers.BaseSampler):
    """The sampler of the grid and final phases: every planned trial is enqueued once with its values (Tune asks for
    exactly that many), a full grid or the subset an `exclude:` or a resumed run leaves; it never invents one."""

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: Any) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        raise RuntimeError(f"study {study.study_name} asked for a trial beyond the planned ones ({param_name})")


class _OptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, except that a trial ending on a NaN metric (a diverged run: the trainable reports NaN
    instead of raising, so that Ray does not retry it) is told to Optuna as failed instead of staying running."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        value = (result or {}).get(self.metric)
        if isinstance(value, float) and math.isnan(value):
            result, error = None, True
        super().on_trial_complete(trial_id, result, error)


def _planned_space(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Each factor and the seed as a Tune choice over the values the planned trials take: the searcher makes them
    Optuna parameters (so Optuna's views and importances show the factors), and Tune's progress table shows them
    as columns, which it does only for a space given to the Tuner, not for a searcher's define-by-run space."""
    return {name: tune.choice(list(dict.fromkeys(point[name] for point in points))) for name in points[0]}


def _direction(spec: Spec) -> str:
    """The spec's mode as an Optuna study's direction."""
    return "maximize" if spec.mode == "max" else "minimize"


def _grid_search_alg(points: list[dict[str, Any]], experiment: Location, spec: Spec, study: str) -> Any:
    """Optuna over the planned trials, each enqueued once (Ray's points_to_evaluate) with its parameters."""
    return _OptunaSearch(sampler=_PlannedOnly(), points_to_evaluate=points,
                         metric=spec.metric, mode=spec.mode, storage=_journal(experiment), study_name=study)


def run_experiment(spec: Spec, options: RunOptions) -> Outcome:
    """Run every planned trial of `spec` that has not finished in its experiment folder; the outcome counts all.
    Finished results of other code or data than this run's are refused (StaleResults), unless `options.stale`
    says to train them again or to keep them."""
    name = spec.name if options.name is None else options.name  # an empty --name is refused, not replaced
    # before anything is written
    check_experiment_name(name, "--name" if options.name is not None else "the spec's name:")
    check_trackers(options.log)  # a missing package stops the run before anything is written
    with _process_settings(), stop_on_signals() as stop:
        experiment = locate(options.storage, name)
        check_format(experiment)
        plans = plan_experiment(spec, options)  # an impossible variant stops here, before anything is written
        try:
            return _run_locked(spec, options, name, experiment, plans, stop)
        except KeyboardInterrupt:  # Ray has stopped the trials and the lock is released: say what was kept
            raise Interrupted(stop.signum, _interrupted_message(experiment)) from None


def _run_locked(spec: Spec, options: RunOptions, name: str, experiment: Location, plans: list[TrialPlan],
                stop: SignalStop) -> Outcome:
    """The run itself, holding the experiment's driver lock."""
    with driver_lock(experiment):  # a second driver stops here, before it writes anything
        previous = _previous_record(experiment)
        _check_same_experiment(experiment, previous, spec, options.force_spec)
        record = _record_experiment(experiment, spec, options, name, previous)
        clips = _prepare_data(plans[0])
        user_modules = (*options.imports, *spec.imports)  # edited, they make earlier results stale too
        fingerprints = {CODE: code_fingerprint(user_modules=user_modules),
                        DATA: data_fingerprint(plans[0].config.data)}
        # A grid's trials are known now, so stale results are refused before Ray starts; a search's final trials
        # are known once it has tuned.
        todo = None if spec.search is not None else _unfinished(plans, experiment, fingerprints, options.stale)
        started_ray = _init_ray(options)
        stop.install()
        try:
            resources = _trial_resources(spec, options, plans[0], clips)
            if resources.gpu == 0 and pack_size(options.pack, False) > 1:
                _say(f"--pack {options.pack} on CPU trials: a pack trains no faster there than its members one "
                     f"after another, and the paper model slower (docs/performance.md#trial-packs); --pack auto "
                     f"leaves CPU trials alone")
            context = _trial_context(spec, options, name, fingerprints, resources)
            if todo is None:
                plans = _tune_then_take_best(plans, spec, options, experiment, context)
                todo = _unfinished(plans, experiment, fingerprints, options.stale)
            _record_kept_stale(experiment, record, todo.kept_stale)
            if len(todo.plans) < len(plans):
                _say(f"{len(plans) - len(todo.plans)} of {len(plans)} trials already finished in "
                     f"{experiment.uri}: skipping them")
            phase = "final" if spec.search is not None else "grid"

            def run(batch: list[TrialPlan]) -> None:
                _run_planned(replace(context, phase=phase, planned={p.trial_key: p for p in batch},
                                     resume_from=todo.resume_from), spec, options, experiment)

            rule = seeds_until_decided(spec, options)
            if rule is not None:  # the seeds each variant needs, round by round
                plans = run_rounds(plans, rule, spec, todo.plans, run, lambda: scan_results(experiment, fingerprints))
                used = {p.config_hash for p in plans}
                todo = replace(todo, plans=[p for p in todo.plans if p.config_hash in used])
            elif todo.plans:
                run(todo.plans)
        finally:
            if started_ray:
                ray.shutdown()
        return _outcome(plans, len(plans) - len(todo.plans), experiment, fingerprints, todo.kept_stale)


ABANDONED = ("Abandoned: the run training this tuning sample was interrupted, and a rerun sampled a new one in its "
             "place (a sample is not resumed)")


def abandon_records(experiment: Location, key: str) -> int:
    """Say in the records of variant `key`'s tuning samples that an interrupted run left running that they failed,
    replaced (as fail_abandoned tells the study): the report and a later interruption's count would take them for
    running; how many."""
    abandoned = [record for record in scan_results(experiment).values() if record.get("status") == "running"
                 and (record.get("search") or {}).get("phase") == "tune" and record.get("variant_key") == key]
    for record in abandoned:
        path = f"{record.pop('_dir')}/{RESULT}"
        write_json_at(Location(experiment.fs, path, path), {**record, "status": "failed", "error": ABANDONED})
    return len(abandoned)


def _interrupted_message(experiment: Location) -> str:
    """What an interrupted run leaves, counted from the trial records: how many finished (and, tuning, how many
    ASHA stopped), how many a rerun continues from a checkpoint, how many it starts over, and how many tuning samples
    it replaces with new ones (a rerun asks Optuna for new samples in place of the unfinished ones)."""
    records = scan_results(experiment).values()
    finished = sum(1 for r in records if r.get("status") == "finished")
    stopped = sum(1 for r in records if r.get("status") == "stopped")
    unfinished = [r for r in records if r.get("status") == "running"]  # a worker stopped mid-way leaves "running"
    tuning = [r for r in unfinished if (r.get("search") or {}).get("phase") == "tune"]
    planned = [r for r in unfinished if (r.get("search") or {}).get("phase") != "tune"]
    resumable = sum(1 for r in planned if _latest_checkpoint(experiment, r["_dir"]))
    kept = f" (and {stopped} that ASHA stopped)" if stopped else ""
    over = f", {len(planned) - resumable} will start over" if len(planned) > resumable else ""
    replaced = f", {len(tuning)} tuning samples will be replaced by new ones" if tuning else ""
    return (f"interrupted: {finished} finished trials kept{kept}; {resumable} will resume from their last "
            f"checkpoint{over}{replaced}; rerun the same command (or with --resume)")


def _trial_context(spec: Spec, options: RunOptions, name: str, fingerprints: Mapping[str, str],
                   resources: TrialResources) -> TrialContext:
    """What every trial of the experiment shares; it travels to the workers once, through Ray's object store.
    The command line is the driver's: a Ray worker has its own."""
    variant_list = variants(spec)
    return TrialContext(
        experiment=name, budget=options.budget, common=base_overrides(spec, options.budget, options.cli_overrides()),
        variants={variant_key(v): variant_overrides(spec, v) for v in variant_list},
        variant_values={variant_key(v): v for v in variant_list},
        resources=resources.request(), threads=max(1, int(resources.cpu)),
        tune_seed=tuning_seed(resolve_seeds(spec, options.budget, options.seeds)),
        fingerprints=dict(fingerprints), command=tuple(sys.argv),
        imports=tuple(dict.fromkeys((*options.imports, *spec.imports))), metric=spec.metric)


@dataclass
class _Todo:
    plans: list[TrialPlan]  # the trials to run
    resume_from: dict[str, str]  # config hash → the checkpoint an unfinished trial continues from
    kept_stale: int  # finished results of other code or data that are reused (--keep-stale)


def _unfinished(plans: list[TrialPlan], experiment: Location, fingerprints: Mapping[str, str],
                stale: str | None) -> _Todo:
    """The plans without a finished result, and for those that ran before, the checkpoint to continue from.

    A finished result of other code or data (or of unknown ones: written before fingerprints were recorded) is
    refused with StaleResults, unless `stale` is "rerun" (trained again, in a new trial folder: the old result
    stays, superseded) or "keep" (reused). An unfinished trial of other code or data starts over."""
    done = scan_results(experiment, fingerprints)
    finished = {p.config_hash for p in plans if done.get(p.config_hash, {}).get("status") == "finished"}
    outdated = {h for h in finished if not _current(done[h], fingerprints)}
    if outdated and stale is None:
        raise StaleResults(_stale_message([done[h] for h in outdated], len(finished), fingerprints, experiment))
    if outdated:
        _say(f"{'training again' if stale == 'rerun' else 'keeping'} {len(outdated)} finished trials of other code "
             f"or data (--{stale}-stale)")
    skip = finished - outdated if stale == "rerun" else finished
    todo = [p for p in plans if p.config_hash not in skip]
    again = [p for p in todo if p.config_hash in done and not _current(done[p.config_hash], fingerprints)
             and p.config_hash not in outdated]
    if again:
        _say(f"{len(again)} unfinished trials ran on other code or data: they start over instead of continuing "
             "from their checkpoints")
    resume_from = {p.config_hash: checkpoint for p in todo
                   if p.config_hash in done and _current(done[p.config_hash], fingerprints)
                   for checkpoint in [_latest_checkpoint(experiment, done[p.config_hash]["_dir"])] if checkpoint}
    return _Todo(todo, resume_from, len(outdated) if stale == "keep" else 0)


def _stale_message(stale: list[dict[str, Any]], finished: int, fingerprints: Mapping[str, str],
                   experiment: Location) -> str:
    """One line: how many finished results are stale and why, and the two ways on."""
    unknown = sum(1 for r in stale if CODE not in r or DATA not in r)
    known = [r for r in stale if CODE in r and DATA in r]
    reasons = {"code differs": sum(1 for r in known if r[CODE] != fingerprints[CODE]),
               "data differs": sum(1 for r in known if r[DATA] != fingerprints[DATA]),
               "not recorded (older results)": unknown}
    why = ", ".join(f"{what}: {count}" for what, count in reasons.items() if count)
    return (f"{len(stale)} of {finished} finished trials in {experiment.uri} were trained on other code or data "
            f"than this run's ({why}); pass --rerun-stale to train them again, or --keep-stale to reuse them")


def _run_planned(context: TrialContext, spec: Spec, options: RunOptions, experiment: Location) -> None:
    """One Tune invocation over the planned trials, each exactly once (enqueued in an Optuna study)."""
    _say(f"running {len(context.planned)} trials of {context.experiment} ({options.budget} budget) into "
         f"{experiment.uri}")
    # Each invocation gets its own study: the grid of what is left differs from run to run.
    label = f"{context.phase}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    plans = list(context.planned.values())
    packs = plan_packs(plans, pack_size(options.pack, context.resources["gpu"] > 0))
    study = f"{context.experiment}/{label}"
    if len(packs) < len(plans):  # a Tune trial per pack, each member in its own folder inside the pack's
        _say(f"as {len(packs)} trial packs of up to {max(len(p.members) for p in packs)} members (--pack)")
        context = replace(context, packs={pack.name: pack.members for pack in packs})
        search = PlannedPackSearch(optuna.create_study(study_name=study, storage=_journal(experiment),
                                                       sampler=_PlannedOnly(), direction=_direction(spec)),
                                   packs, spec.metric, spec.mode)
        _tune(context, search, len(packs), spec, options, experiment, label)
        return
    points = [trial_params(plan) for plan in plans]
    search = _grid_search_alg(points, experiment, spec, study)
    _tune(context, search, len(points), spec, options, experiment, label, param_space=_planned_space(points))


def _outcome(plans: list[TrialPlan], skipped: int, experiment: Location, fingerprints: Mapping[str, str],
             kept_stale: int) -> Outcome:
    """Every planned trial as finished or failed, from the result files; none silently absent."""
    results = scan_results(experiment, fingerprints)
    hashes = {p.config_hash for p in plans}
    finished = [r for h, r in results.items() if h in hashes and r.get("status") == "finished"]
    failed = [r for h, r in results.items() if h in hashes and r.get("status") != "finished"]
    for record in failed:  # killed, or its last write failed: its record still says running
        if not record.get("error"):
            record["error"] = (f"stopped after epoch {record.get('epochs_completed', 0)} of "
                               f"{record.get('epochs_planned', '?')} without recording why (see error.txt in "
                               f"{record['_dir']})")
    # A trial that never wrote its record (its worker died before the first epoch on every retry, or the disk
    # was full) is failed too, not silently absent.
    failed += [{"config_hash": p.config_hash, "variant_key": p.variant_key, "seed": p.seed, "status": "missing",
                "error": f"no {RESULT} was recorded (see error.txt under {experiment.uri})"}
               for p in plans if p.config_hash not in results]
    return Outcome(experiment, len(plans), skipped, finished, failed, _storage_problem(experiment) if failed else None,
                   kept_stale)


def _tune_then_take_best(plans: list[TrialPlan], spec: Spec, options: RunOptions, experiment: Location,
                         context: TrialContext) -> list[TrialPlan]:
    """Tune every variant, then the plans with each variant's best values (the final runs)."""
    best = _tune_variants(spec, options, experiment, replace(context, phase="tune"))
    return [_with_best(plan, best[plan.variant_key], options) for plan in plans]


def _with_best(plan: TrialPlan, best: Mapping[str, Any], options: RunOptions) -> TrialPlan:
    overrides = {**plan.overrides, **best}
    config = build_config(options.budget, overrides, f"trial {plan.trial_key}")
    return replace(plan, overrides=overrides, config=config, config_hash=config.hash(), sampled=dict(best))


def _tune_variants(spec: Spec, options: RunOptions, experiment: Location,
                   context: TrialContext) -> dict[str, dict[str, Any]]:
    """Give every variant the same TPE budget (seeded, optionally with ASHA); return each one's best values.
    With packs (--pack), a variant's samples train K at a time (ablations.pack_search)."""
    assert spec.search is not None
    space = load_search_space(spec.search.space)
    samples = search_samples(spec, options)
    storage = _journal(experiment)
    best: dict[str, dict[str, Any]] = {}
    epochs = build_config(options.budget, context.common, "search").train.epochs
    size = pack_size(options.pack, context.resources["gpu"] > 0)
    for key in context.variants:
        study_name = f"{context.experiment}/tune/{key}"
        study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                    direction=_direction(spec))
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        remaining = samples - len(completed)
        if remaining > 0:
            _say(f"tuning {key}: {remaining} of {samples} samples of {space.name}"
                 f"{f', up to {size} at a time in trial packs' if size > 1 else ''}")
            abandoned = fail_abandoned(study)  # packed or not, whichever way the earlier run tuned
            if abandoned:
                _say(f"{abandoned} sample{'s' * (abandoned > 1)} of {key} that an earlier run left unfinished "
                     f"{'count' if abandoned > 1 else 'counts'} as failed")
            abandon_records(experiment, key)
            seed = zlib.crc32(study_name.encode()) % 2**31
            label = f"tune-{_slug(key)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
            if size > 1:
                _tune_in_packs(study_name, storage, space, key, remaining, size, seed, epochs, spec, options,
                               experiment, label, context)
            else:
                search = _OptunaSearch(space=space.optuna_space_fn({VARIANT: key}),
                                       sampler=optuna.samplers.TPESampler(seed=seed), metric=spec.metric,
                                       mode=spec.mode, storage=storage, study_name=study_name)
                scheduler = None
                if spec.search.scheduler:
                    scheduler = ASHAScheduler(time_attr="epoch", max_t=epochs,
                                              grace_period=spec.search.scheduler["grace_period"],
                                              reduction_factor=spec.search.scheduler["reduction_factor"])
                # TPE learns from finished samples: suggest no more at once than can run at once
                _tune(context, search, remaining, spec, options, experiment, label, scheduler,
                      _slots(context.resources))
            study = optuna.load_study(study_name=study_name, storage=storage)
        best[key] = best_sample(study, key, space.name)
        _say(f"best for {key}: {best[key]} ({spec.metric} {study.best_value:.2f})")
    return best


class TuningFailed(ValueError):
    """No tuning sample of a variant finished: there is no best configuration to run on every seed."""


def best_sample(study: optuna.Study, key: str, space: str) -> dict[str, Any]:
    """The sampled values of variant `key`'s best tuning sample; TuningFailed, saying what to do, if none finished."""
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        failed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
        raise TuningFailed(f"tuning {key}: none of its samples finished ({failed} failed: they diverged or errored, "
                           f"and their records say why); narrow search space {space!r} (a lower train.lr range, "
                           f"say) or check the data, then rerun: finished trials are kept")
    return dict(study.best_trial.params)


def _tune_in_packs(study_name: str, storage: optuna.storages.BaseStorage, space: Any, key: str, samples: int,
                   size: int, seed: int, epochs: int, spec: Spec, options: RunOptions, experiment: Location,
                   label: str, context: TrialContext) -> None:
    """One variant's tuning samples in packs of up to `size`, asked from a constant-liar TPE; with a scheduler, ASHA
    stops members (ablations.pack_search.MemberRungs, a Ray actor for this variant's packs)."""
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=liar_sampler(seed))
    search = PackSearch(study, space, key, samples, size, context, spec.metric, spec.mode)
    rungs = None
    if spec.search is not None and spec.search.scheduler:
        rungs = ray.remote(MemberRungs).options(num_cpus=0).remote(
            epochs, spec.search.scheduler["grace_period"], spec.search.scheduler["reduction_factor"], spec.mode)
    try:
        _tune(replace(context, rungs=rungs), search, samples, spec, options, experiment, label,
              concurrency=_slots(context.resources))
    finally:
        if rungs is not None:
            ray.kill(rungs)


def tuning_seed(seeds: tuple[int, ...]) -> int:
    """The seed tuning trials train with: one outside the final seeds, so the re-runs that fill the table are
    not the very runs the best configuration was picked on (that pick is optimistic for its own seed)."""
    return 0 if 0 not in seeds else max(seeds) + 1


def search_samples(spec: Spec, options: RunOptions) -> int:
    """Samples per variant when a spec tunes: the command line's, else the budget's, else the spec's."""
    assert spec.search is not None
    budget = spec.budgets.get(options.budget)
    return options.samples or (budget.samples if budget and budget.samples else spec.search.samples)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


class SpecChanged(SpecError):
    """The experiment folder holds another experiment: other factors, variants, rules, reference or metric."""


# What makes an experiment the same one: its grid and what it compares. Seeds, samples, budgets and base settings
# may change from run to run (more seeds, a longer budget): the report tells such settings apart (analysis.groups).
_IDENTITY = ("factors", "rules", "exclude", "reference", "metric", "mode")


def _previous_record(experiment: Location) -> dict[str, Any]:
    """The experiment.json an earlier run wrote, {} where there is none (or it is not a JSON object)."""
    marker = experiment.child(EXPERIMENT)
    record = read_json(marker) if marker.exists() else {}
    return record if isinstance(record, dict) else {}


def _check_same_experiment(experiment: Location, record: Mapping[str, Any], spec: Spec, force: bool) -> None:
    """Refuse to run `spec` into a folder whose experiment.json `record` holds another spec, unless forced."""
    previous = record.get("spec")
    if not isinstance(previous, dict) or force:
        return
    now = spec.to_dict()
    differ = [key for key in _IDENTITY if key in previous and previous[key] != now[key]]
    before, after = (previous.get("search") or {}).get("space"), (now["search"] or {}).get("space")
    if before != after:
        differ.append("search space")
    if differ:
        raise SpecChanged(f"{experiment.uri} holds another experiment than {spec.path or spec.name} "
                          f"({', '.join(differ)} differ): run it under another --name, or pass --force-spec to "
                          f"replace its experiment.json")


def _record_experiment(experiment: Location, spec: Spec, options: RunOptions, name: str,
                       previous: Mapping[str, Any]) -> dict[str, Any]:
    """experiment.json and the spec as run, written before any trial so the folder explains itself; the record.
    The first write: an unwritable folder or a full disk stops the run here, before any trial, with one line.

    `kept_stale` counts the finished results of other code or data the experiment reuses (--keep-stale), for the
    report to say so: the last run's count (from `previous`, the record an earlier run wrote) stands until this run
    has decided (`_record_kept_stale`)."""
    marker = experiment.child(EXPERIMENT)
    record = {"format_version": EXPERIMENT_FORMAT, "name": name, "description": spec.description,
              "factors": {f.key: list(f.values) for f in spec.factors},
              "factor_labels": {f.key: f.label for f in spec.factors}, "variants": variants(spec),
              "reference": dict(spec.reference), "metric": spec.metric, "mode": spec.mode,
              "seeds": list(resolve_seeds(spec, options.budget, options.seeds)),
              "dataset": options.dataset or spec.base.get("data.dataset", "ma52"), "budget": options.budget,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "spec": spec.to_dict(), "options": {k: v for k, v in vars(options).items()},
              "kept_stale": previous.get("kept_stale", 0)}
    try:
        write_json_at(marker, record)
        experiment.child(SPEC_AS_RUN).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    except OSError as error:
        raise cannot_write(experiment.uri, error) from None
    return record


def _record_kept_stale(experiment: Location, record: dict[str, Any], kept: int) -> None:
    """experiment.json with this run's count of reused stale results, if it changed."""
    if record["kept_stale"] == kept:
        return
    record["kept_stale"] = kept
    try:
        write_json_at(experiment.child(EXPERIMENT), record)
    except OSError as error:
        raise cannot_write(experiment.uri, error) from None


def _prepare_data(plan: TrialPlan) -> tuple[int, int] | None:
    """Make the data ready once, before any trial: generate the synthetic set, or check the real folder exists.
    The train and val clip counts, where they are known without reading a remote folder."""
    data = plan.config.data
    if data.root is None:
        started = time.perf_counter()
        root = ensure_synthetic(seed=data.synthetic_seed, clips_per_class=data.synthetic_clips_per_class,
                                long_tail=data.synthetic_long_tail)
        _say(f"synthetic MA-52 data ready in {root} ({time.perf_counter() - started:.1f}s)")
        train, val = (sum(split_counts(split, data.synthetic_clips_per_class, data.synthetic_long_tail,
                                       data.synthetic_seed)) for split in ("train", "val"))
        return train, val
    if "://" in data.root:
        return None
    if not os.path.exists(data.root):
        raise FileNotFoundError(f"data folder {data.root} does not exist; pass --data-root with the folder "
                                f"holding {data.dataset}'s files")
    # Read and validate the splits once here: bad files (wrong joints, labels out of range, a corrupt or
    # code-carrying pickle) stop the run with one line, instead of failing every trial on every retry.
    started = time.perf_counter()
    layout = data.skeleton()
    train, val = (len(read_split(data.root, split, layout, data.format)) for split in ("train", "val"))
    _say(f"data in {data.root} checked: {train} train and {val} val clips ({time.perf_counter() - started:.1f}s)")
    return train, val
