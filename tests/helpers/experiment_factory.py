"""Fake experiment folders written exactly per the runner's contract (experiment.json, trial_result.json,
history.jsonl, best_val_predictions.npz, study.journal) and per `python -m ablations.evaluate`'s
(test_predictions.npz, test_result.json), for the analysis tests and the scale benchmark.

Trial folders are nested the way Ray names them (trials/<run>/<trainable>_<id>_<n>_<settings>/...), some a level
deeper. Each also holds Ray's own result.json (JSON lines of reported metrics, without our keys), and one folder
holds nothing else; readers must ignore both. `legacy=True` writes folders as the runner did before our record had
its own name: the record is result.json, where Ray's would be (mmn.folders.LEGACY_RESULT). Calling
`make_experiment` again on the same folder with another `run` adds the trials of a rerun (another Ray run folder,
a day later), as a rerun with other options would.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import optuna

from mmn.folders import (EXPERIMENT, EXPERIMENT_FORMAT, HISTORY, LEGACY_RESULT, RESULT, RESULT_FORMAT, SPEC_AS_RUN,
                         SPLIT_RESULT_FORMAT, STUDY, VALIDATION_PREFIX, predictions_file, split_result_file)
from mmn.metrics import BODY_METRICS, METRIC_NAMES, evaluate

# Makes a trial's predictions on a split: {"logits", "labels", "names"} from its variant and seed.
PredictionMaker = Callable[[Mapping[str, Any], int], Mapping[str, np.ndarray]]

FACTORS: dict[str, list[Any]] = {"model.msm": ["released", "off"], "model.mtm": [True, False]}
FACTOR_LABELS = {"model.msm": "MSM", "model.mtm": "MTM"}
REFERENCE: dict[str, Any] = {"model.msm": "released", "model.mtm": True}
MA52_KEYS = tuple(VALIDATION_PREFIX + name for name in METRIC_NAMES)
IMIGUE_KEYS = tuple(VALIDATION_PREFIX + name for name in METRIC_NAMES if name not in BODY_METRICS)


def default_score(variant: Mapping[str, Any], seed: int) -> float:
    """Top-1 of a variant and seed: switching a module off costs accuracy; seeds scatter by a variant-specific
    amount, so paired differences are not constant (a constant difference has no t statistic)."""
    base = 60.0 - 2.0 * (variant.get("model.msm") == "off") - 3.0 * (variant.get("model.mtm") is False)
    shift = sum(len(str(value)) for value in variant.values())
    return round(base + 0.2 * (((seed + 1) * (shift + 3)) % 7) - 0.6, 2)


# A hand-worked ablation (test_analysis_stats derives its statistics): best-epoch Top-1 for seeds 0, 1, 2.
NO_MTM: dict[str, Any] = {"model.msm": "released", "model.mtm": False}
NO_MSM: dict[str, Any] = {"model.msm": "off", "model.mtm": True}
NEITHER: dict[str, Any] = {"model.msm": "off", "model.mtm": False}
HAND_TOP1 = {
    json.dumps(REFERENCE, sort_keys=True): [60.0, 61.0, 62.0],  # mean 61, std 1
    json.dumps(NO_MTM, sort_keys=True): [58.0, 58.5, 60.0],  # differences to the reference -2, -2.5, -2
    json.dumps(NO_MSM, sort_keys=True): [59.0, 61.0, 61.0],  # differences -1, 0, -1
    json.dumps(NEITHER, sort_keys=True): [55.0, 99.0, 56.0],  # tests fail seed 1: its 99 must never count
}


def hand_score(variant: Mapping[str, Any], seed: int) -> float:
    return HAND_TOP1[json.dumps(dict(variant), sort_keys=True)][seed]


def metric_values(top1: float, dataset: str = "ma52") -> dict[str, float]:
    """Every validation metric of the contract, derived from Top-1 (top5 = top1 + 20, body_top1 = top1 + 15...)."""
    keys = MA52_KEYS if dataset == "ma52" else IMIGUE_KEYS
    offsets = {"val_top1": 0.0, "val_top5": 20.0, "val_body_top1": 15.0, "val_f1_micro": 0.0, "val_f1_macro": -5.0,
               "val_body_f1_micro": 15.0, "val_body_f1_macro": 10.0, "val_f1_mean": 5.0}
    return {key: min(100.0, round(top1 + offsets[key], 2)) for key in keys}


def write_experiment_json(root: Path, *, name: str = "msm_mtm", factors: Mapping[str, list[Any]] = FACTORS,
                          factor_labels: Mapping[str, str] = FACTOR_LABELS,
                          reference: Mapping[str, Any] | None = REFERENCE, seeds: Iterable[int] = (0, 1, 2),
                          dataset: str = "ma52", format_version: int = EXPERIMENT_FORMAT,
                          description: str = "MSM and MTM on and off",
                          variants: Iterable[Mapping[str, Any]] | None = None,
                          ensembles: Mapping[str, Mapping[str, float]] | None = None,
                          rules: Iterable[Mapping[str, Any]] = (), kept_stale: int | None = None) -> Path:
    """experiment.json as the runner writes it; `variants` (default: the whole grid) are those the spec ran; the
    spec as run records `ensembles` and `rules`; `kept_stale` is what a rerun that reused older code's results adds."""
    root.mkdir(parents=True, exist_ok=True)
    planned = [dict(zip(factors, values)) for values in itertools.product(*factors.values())] \
        if variants is None else [dict(variant) for variant in variants]
    spec = {"name": name, "description": description, "base": {},
            "factors": {key: list(values) for key, values in factors.items()}, "factor_labels": dict(factor_labels),
            "rules": [dict(rule) for rule in rules], "exclude": [],
            "reference": None if reference is None else dict(reference), "seeds": list(seeds), "metric": "val_top1",
            "mode": "max", "ensembles": {key: dict(value) for key, value in (ensembles or {}).items()}}
    meta = {"format_version": format_version, "name": name, "description": description, "factors": dict(factors),
            "factor_labels": dict(factor_labels), "variants": planned,
            "reference": None if reference is None else dict(reference),
            "metric": "val_top1", "mode": "max", "seeds": list(seeds), "dataset": dataset, "budget": "quick",
            "created": "2025-01-01T00:00:00+00:00", "spec": spec}
    if kept_stale is not None:
        meta["kept_stale"] = kept_stale
    (root / EXPERIMENT).write_text(json.dumps(meta, indent=2))
    (root / SPEC_AS_RUN).write_text(f"name: {name}\n")
    return root


def resolved_config(variant: Mapping[str, Any], seed: int, *, epochs: int = 3, dataset: str = "ma52",
                    overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """A trial record's "config": nested sections, holding the variant's dotted keys, the seed and `overrides`."""
    config: dict[str, dict[str, Any]] = {"model": {"msm": "released", "mtm": True},
                                         "data": {"dataset": dataset, "modality": "joint"},
                                         "train": {"epochs": epochs, "seed": seed, "threads": 1, "device": "cpu"}}
    for key, value in {**(overrides or {}), **variant}.items():
        section, name = key.split(".", 1)
        config.setdefault(section, {})[name] = value
    return config


def result_record(experiment: str, variant: Mapping[str, Any], seed: int, top1: float, *, epochs: int = 3,
                  status: str = "finished", error: str | None = None, dataset: str = "ma52",
                  search: Mapping[str, Any] | None = None, trial_id: str = "t0000",
                  params: int = 1_325_186, gflops: float = 2.73, overrides: Mapping[str, Any] | None = None,
                  run: int = 0) -> dict[str, Any]:
    """A trial record (mmn.folders.RESULT) as the runner writes it. The best epoch is the last; final metrics are
    0.5 points lower. `overrides` (dotted keys) go into its config; `run` days after the first run it started and
    ended."""
    best = metric_values(top1, dataset)
    final = {key: round(value - 0.5, 2) for key, value in best.items()}
    done = epochs if status == "finished" else max(epochs // 2, 1)
    config = resolved_config(variant, seed, epochs=epochs, dataset=dataset, overrides=overrides)
    return {
        "format_version": RESULT_FORMAT, "status": status, "error": error, "trial_id": trial_id, "experiment": experiment,
        "variant": dict(variant), "seed": seed, "config": config,
        "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
        "final": {**final, "train_loss": 1.23}, "best": {**best, "train_loss": 1.3}, "best_epoch": done,
        "epochs_completed": done, "epochs_planned": epochs, "params": params, "gflops": gflops,
        "throughput": {"train_clips_per_s": 11.6, "eval_clips_per_s": 42.0},
        "search": None if search is None else dict(search),
        "versions": {"python": "3.11", "torch": "2.13.0", "mmn": "0.1.0"},
        "hardware": {"device": "cpu", "threads": 2}, "wall_time_s": 12.5,
        "started": f"2025-01-{1 + run:02d}T00:00:00+00:00",
        "ended": f"2025-01-{1 + run:02d}T00:{seed % 60:02d}:00+00:00",
    }


def history_lines(top1: float, epochs: int, dataset: str = "ma52") -> list[dict[str, Any]]:
    """Per-epoch metrics rising linearly to `top1` at the last epoch."""
    lines = []
    for epoch in range(1, epochs + 1):
        values = metric_values(top1 * epoch / epochs, dataset)
        lines.append({"epoch": epoch, "train_loss": round(4.0 - 2.5 * epoch / epochs, 3), "lr": 0.001,
                      **{key: values[key] for key in ("val_top1", "val_top5", "val_body_top1", "val_f1_mean")
                         if key in values}, "time_s": 12.3})
    return lines


def clip_names(count: int, split: str = "val") -> np.ndarray:
    """The clips' names as a data set records them, e.g. "val0007"."""
    return np.array([f"{split}{i:04d}" for i in range(count)])


def fake_predictions(top1: float, num_classes: int = 52, per_class: int = 2, seed: int = 0, *, split: str = "val",
                     names: bool = True, withheld: bool = False) -> dict[str, np.ndarray]:
    """Logits whose argmax is right for about `top1` percent of the clips, every class present, with the clips'
    names (none: a file from before names were recorded); `withheld` labels are -1, as MA-52's test set's."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class).astype(np.int64)
    logits = rng.normal(size=(len(labels), num_classes)).astype(np.float32)
    right = rng.random(len(labels)) < top1 / 100
    logits[np.flatnonzero(right), labels[right]] += 10.0
    arrays = {"logits": logits, "labels": np.full_like(labels, -1) if withheld else labels}
    return {**arrays, "names": clip_names(len(labels), split)} if names else arrays


def write_split_result(folder: Path, split: str, predictions: Mapping[str, np.ndarray], config_hash: str,
                       dataset: str = "ma52", weights_epoch: int = 3) -> Path:
    """What `python -m ablations.evaluate --split SPLIT` writes into a trial folder: the predictions, and the record
    of their metrics (null where the labels are withheld)."""
    np.savez(folder / predictions_file(split), **predictions)
    labels = predictions["labels"]
    metrics = None if (labels < 0).all() else {
        f"{split}_{name}": round(value, 4) for name, value in evaluate(predictions["logits"], labels, dataset).items()}
    record = {"format_version": SPLIT_RESULT_FORMAT, "split": split, "config_hash": config_hash,
              "weights_epoch": weights_epoch, "metrics": metrics, "clips": len(labels),
              "evaluated": "2025-02-01T00:00:00+00:00", "device": "cpu"}
    (folder / split_result_file(split)).write_text(json.dumps(record, indent=2))
    return folder


RAY_LOG = '{"training_iteration": 1, "val_top1": 1.0}\n{"training_iteration": 2, "val_top1": 2.0}\n'


def write_trial(experiment_dir: Path, trial_dir: str, record: Mapping[str, Any] | str,
                history: list[dict[str, Any]] | None = None,
                predictions: Mapping[str, np.ndarray] | None = None, legacy: bool = False) -> Path:
    """One trial folder; `record` given as a string is written verbatim (to fake a corrupt file). Ray's own
    result.json is beside it, unless `legacy`: then the record itself is named result.json, as it was."""
    folder = experiment_dir / trial_dir
    folder.mkdir(parents=True, exist_ok=True)
    text = record if isinstance(record, str) else json.dumps(record, indent=2)
    if legacy:
        (folder / LEGACY_RESULT).write_text(text)
    else:
        (folder / RESULT).write_text(text)
        (folder / LEGACY_RESULT).write_text(RAY_LOG)
    if history is not None:
        (folder / HISTORY).write_text("".join(json.dumps(line) + "\n" for line in history))
    if predictions is not None:
        np.savez(folder / predictions_file("val"), **predictions)
    return folder


def ray_trial_dir(name: str, variant: Mapping[str, Any], seed: int, index: int, run: int = 0) -> str:
    """A folder name like Ray's; every third trial one level deeper, as a trainable's own subfolder would be."""
    settings = ",".join(f"{key}={value}" for key, value in variant.items())
    folder = f"trials/{name}_2025-01-{1 + run:02d}_00-00-00/trainable_{index:05x}_{index}_{settings},seed={seed}"
    return f"{folder}/artifacts" if index % 3 == 2 else folder


def write_study(experiment_dir: Path, study_name: str, n_trials: int, seed: int = 0) -> None:
    """A tuned study in experiment_dir/study.journal: lr dominates the objective, dropout matters a little."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(experiment_dir / STUDY)))
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed))

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("train.lr", 1e-4, 1e-1, log=True)
        dropout = trial.suggest_float("model.dropout", 0.0, 0.5)
        depth = trial.suggest_int("model.depth", 2, 6)
        return 60 - 4 * abs(math.log10(lr) + 2.5) - 2 * dropout + 0.05 * depth

    study.optimize(objective, n_trials=n_trials)


def make_experiment(root: Path, *, name: str = "msm_mtm", seeds: Iterable[int] = (0, 1, 2), epochs: int = 3,
                    score: Callable[[Mapping[str, Any], int], float] = default_score,
                    factors: Mapping[str, list[Any]] = FACTORS, factor_labels: Mapping[str, str] = FACTOR_LABELS,
                    reference: Mapping[str, Any] | None = REFERENCE, dataset: str = "ma52",
                    failed: Iterable[tuple[Mapping[str, Any], int]] = (),
                    predictions: bool | PredictionMaker = False, test: PredictionMaker | None = None,
                    study_trials: int = 0, variants: Iterable[Mapping[str, Any]] | None = None,
                    ensembles: Mapping[str, Mapping[str, float]] | None = None, kept_stale: int | None = None,
                    rules: Iterable[Mapping[str, Any]] = (), overrides: Mapping[str, Any] | None = None,
                    run: int = 0, legacy: bool = False) -> Path:
    """A finished experiment: every variant of the grid (or only `variants`, as a spec's exclude leaves them) on
    every seed, plus extras.

    failed: (variant, seed) pairs whose trial failed (status "failed", an error, no predictions).
    predictions: write best_val_predictions.npz for finished trials (True: `fake_predictions` of their score; or
    a PredictionMaker). test: evaluate finished trials on the test split, as `python -m ablations.evaluate` does,
    with the predictions this makes. study_trials: also write a tuned study with this many trials in
    study.journal, for the reference variant. ensembles, kept_stale: recorded in experiment.json. rules
    ({"when": {factor: value}, "set": {key: value}}) are recorded there too and set keys in the configs of the
    variants they match, as the runner's do. overrides (dotted keys) go into every trial's config; run: a later
    run's trials, in their own Ray folder, `run` days on. legacy: trial folders as written before our record had
    its own name (see the module docstring).
    """
    planned = [dict(zip(factors, values)) for values in itertools.product(*factors.values())] \
        if variants is None else [dict(variant) for variant in variants]
    experiment_dir = write_experiment_json(root / name, name=name, factors=factors, factor_labels=factor_labels,
                                           reference=reference, seeds=seeds, dataset=dataset, variants=planned,
                                           ensembles=ensembles, rules=rules, kept_stale=kept_stale)
    failures = {(json.dumps(dict(variant), sort_keys=True), seed) for variant, seed in failed}
    num_classes = 52 if dataset == "ma52" else 32
    index = 1000 * run
    for variant in planned:
        ruled = {key: value for rule in rules if all(variant.get(k) == v for k, v in rule["when"].items())
                 for key, value in rule["set"].items()}
        for seed in seeds:
            top1 = score(variant, seed)
            is_failed = (json.dumps(variant, sort_keys=True), seed) in failures
            # Each module switched off saves some parameters and FLOPs, so cost plots have a front to draw.
            modules_off = sum(value == "off" or value is False for value in variant.values())
            record = result_record(name, variant, seed, top1, epochs=epochs, dataset=dataset,
                                   trial_id=f"t{index:04d}", status="failed" if is_failed else "finished",
                                   error="CUDA out of memory" if is_failed else None,
                                   params=1_325_186 - 40_000 * modules_off, gflops=round(2.73 - 0.2 * modules_off, 2),
                                   overrides={**(overrides or {}), **ruled}, run=run)
            val = None
            if predictions and not is_failed:
                val = predictions(variant, seed) if callable(predictions) else fake_predictions(top1, num_classes,
                                                                                               seed=seed)
            folder = write_trial(experiment_dir, ray_trial_dir(name, variant, seed, index, run), record,
                                 history_lines(top1, record["epochs_completed"], dataset), val, legacy)
            if test is not None and not is_failed:
                write_split_result(folder, "test", test(variant, seed), record["config_hash"], dataset, epochs)
            index += 1
    # A folder with only Ray's own result.json (a trial that never started training): not a trial of ours.
    ray_log = experiment_dir / "trials" / "ray_own_log" / LEGACY_RESULT
    ray_log.parent.mkdir(parents=True, exist_ok=True)
    ray_log.write_text(RAY_LOG)
    if study_trials:
        write_study(experiment_dir, f"{name}/reference", study_trials)
    return experiment_dir
