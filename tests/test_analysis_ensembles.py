"""Stream ensembles: a row per ensemble whose metrics are those of the streams' fused predictions per seed, worked out
by hand here; streams of other clips are refused with the clip named; files without clip names are matched by
label; on withheld labels an ensemble gets a server file too."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis.collect import collect, read_experiment
from analysis.ensembles import EnsembleError, fuse, fuse_streams
from analysis.report import build_report, main
from analysis.stats import summarize
from tests.helpers.experiment_factory import clip_names, make_experiment

STREAMS = {"data.modality": ["joint", "bone"]}
LABELS = {"data.modality": "Stream"}
JOINT = {"data.modality": "joint"}
ENSEMBLES = {"2s": {"joint": 1, "bone": 1}}
# Best val Top-1 in result.json: the reference (joint) per seed, which the ensemble is tested against.
TOP1 = {"joint": [60.0, 61.0, 85.0], "bone": [55.0, 56.0, 57.0]}
# Four val clips of classes 0-3. Each stream gives each clip one vote: (class, logit), every other logit 0. A vote
# of logit v has probability e^v / (e^v + 51); with equal weights the stronger vote wins where the streams disagree.
VOTES = {
    "joint": [(0, 3.0), (1, 5.0), (12, 1.0), (13, 5.0)],
    "bone": [(0, 2.0), (11, 2.0), (2, 3.0), (3, 2.0)],
}
# Seeds 0 and 1: clip 0 both right, clip 1 joint's 5 beats bone's 2 (right), clip 2 bone's 3 beats joint's 1 (right),
# clip 3 joint's wrong 5 beats bone's 2: 3 of 4 right. Seed 2: bone votes 6 on clip 3 and wins it: 4 of 4.
ENSEMBLE_TOP1 = [75.0, 75.0, 100.0]


def _score(variant: Mapping[str, Any], seed: int) -> float:
    return TOP1[variant["data.modality"]][seed]


def _votes(variant: Mapping[str, Any], seed: int, names: bool = True) -> dict[str, np.ndarray]:
    stream = variant["data.modality"]
    logits = np.zeros((4, 52), dtype=np.float32)
    for clip, (label, value) in enumerate(VOTES[stream]):
        logits[clip, label] = value
    if stream == "bone" and seed == 2:
        logits[3, 3] = 6.0
    arrays = {"logits": logits, "labels": np.arange(4, dtype=np.int64)}
    return {**arrays, "names": clip_names(4)} if names else arrays


def _streams(root: Path, **options: Any) -> Path:
    options.setdefault("predictions", _votes)
    return make_experiment(root, name="streams", factors=STREAMS, factor_labels=LABELS, reference=JOINT,
                           score=_score, ensembles=ENSEMBLES, **options)


def test_an_ensemble_row_holds_the_fused_metrics(tmp_path: Path) -> None:
    experiment = _streams(tmp_path)
    info = read_experiment(experiment)
    fused, notes = fuse_streams(collect(experiment), info)
    assert [(item.name, item.seed) for item in fused] == [("2s", 0), ("2s", 1), ("2s", 2)] and notes == []

    out = build_report(experiment, metrics=["top1"], formats=["md", "png"], say=lambda line: None)
    saved = pd.read_parquet(out / "results.parquet")  # the collected table, with the ensemble's rows
    rows = saved[saved["row"] == "ensemble"].sort_values("seed")
    assert rows["best_val_top1"].tolist() == ENSEMBLE_TOP1 and rows["data.modality"].tolist() == ["2s"] * 3
    assert rows["params"].tolist() == [2 * 1_325_186] * 3  # both streams' models

    summary = summarize(saved, [info], ["top1"]).set_index("variant")
    row = summary.loc[json.dumps({"data.modality": "2s"})]
    assert row["mean"] == pytest.approx(np.mean(ENSEMBLE_TOP1)) and row["std"] == pytest.approx(
        np.std(ENSEMBLE_TOP1, ddof=1))
    # Tested like any variant: paired over seeds against the reference, Holm-corrected with bone.
    expected_p = scipy_stats.ttest_rel(ENSEMBLE_TOP1, TOP1["joint"]).pvalue
    assert row["n_paired"] == 3 and row["p"] == pytest.approx(expected_p)
    assert row["p_holm"] == pytest.approx(min(1.0, 2 * expected_p)) and row["p_holm"] < 0.01
    markdown = (out / "table.md").read_text()
    assert "| 2s | **83.3** ± 14.4 \\*\\* | +14.7 [+13.2, +16.1] | better | 2.65 | 5.46 |" in markdown
    assert "Ensembles: weighted sum of the streams' softmax probabilities, per seed: 2s = 1 joint + 1 bone." \
        in markdown
    assert (out / "bars.png").stat().st_size > 1000


def test_probabilities_and_logits_fuse_differently() -> None:
    # Joint is sure of class 0 over class 1 in probability (e^10 vs e^9) but its logits are large; bone mildly
    # prefers class 1. Probabilities: 0.730 + 0.014 for class 0 against 0.269 + 0.283 for class 1. Logits: 10 + 0
    # against 9 + 3.
    joint = np.zeros((1, 52))
    joint[0, :2] = [10.0, 9.0]
    bone = np.zeros((1, 52))
    bone[0, 1] = 3.0
    assert fuse([joint, bone], [1, 1]).argmax() == 0
    assert fuse([joint, bone], [1, 1], "logits").argmax() == 1
    np.testing.assert_allclose(fuse([joint, bone], [2, 1]).sum(), 3.0)  # each stream's probabilities sum to 1


def test_streams_of_other_clips_are_refused_naming_the_clip(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    def shifted(variant: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
        arrays = _votes(variant, seed)
        if variant["data.modality"] == "bone" and seed == 1:
            arrays["names"] = np.array(["val0000", "val0001", "val0003", "val0002"])
        return arrays

    experiment = _streams(tmp_path, predictions=shifted)
    assert main([str(experiment), "--format", "md"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "do not describe the same clips: their clip names first differ at row 2: 'val0002' vs 'val0003'" in error
    assert "best_val_predictions.npz" in error


def test_files_without_clip_names_are_matched_by_label(tmp_path: Path) -> None:
    experiment = _streams(tmp_path, predictions=lambda variant, seed: _votes(variant, seed, names=False))
    out = build_report(experiment, metrics=["top1"], formats=["md"], say=lambda line: None)
    assert "clip names were not recorded in 6 prediction files (older runs)" in (out / "summary.md").read_text()
    assert "| 2s | **83.3** ± 14.4" in (out / "table.md").read_text()

    def relabelled(variant: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
        arrays = _votes(variant, seed, names=False)
        if variant["data.modality"] == "bone":
            arrays["labels"] = np.array([0, 1, 3, 2])
        return arrays

    other = _streams(tmp_path / "other", predictions=relabelled)
    with pytest.raises(EnsembleError, match=r"their labels \(clip names were not recorded\) first differ at row 2: "
                                            r"2 vs 3"):
        build_report(other, formats=["md"], say=lambda line: None)


def test_a_seed_missing_a_stream_is_left_out_with_a_note(tmp_path: Path) -> None:
    experiment = _streams(tmp_path, failed=[({"data.modality": "bone"}, 2)])
    out = build_report(experiment, metrics=["top1"], formats=["md"], say=lambda line: None)
    assert "| 2s | **75.0** ± 0.0 |" in (out / "table.md").read_text()
    assert ("ensemble 2s (default): seed 2 left out, no finished bone trial with val predictions"
            in (out / "summary.md").read_text())


def test_withheld_labels_give_the_ensemble_a_server_file(tmp_path: Path) -> None:
    def withheld(variant: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
        arrays = _votes(variant, seed)
        return {**arrays, "labels": np.full(4, -1), "names": clip_names(4, "test")}

    experiment = _streams(tmp_path, test=withheld)
    out = build_report(experiment, formats=["md"], split="test", say=lambda line: None)
    assert sorted(path.name for path in out.glob("*.zip")) == [
        "submission_modality-2s.zip", "submission_modality-bone.zip", "submission_modality-joint.zip"]
    with zipfile.ZipFile(out / "submission_modality-2s.zip") as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("prediction.csv").decode())))
    # Fused per seed, then averaged over seeds. Clip 3: joint's vote for 13 (probability 0.744 each seed) outweighs
    # bone's for 3 (0.127, 0.127, then 0.888 at seed 2): 2.27 against 1.16. Clips 1 and 2 as in the val case.
    assert [row["action_pred_1"] for row in rows] == ["0", "1", "2", "13"] and rows[3]["action_pred_2"] == "3"


def test_each_combination_of_the_other_factors_gets_its_ensemble(tmp_path: Path) -> None:
    def votes(variant: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
        arrays = _votes(variant, seed)
        if not variant["model.mtm"]:
            arrays["logits"][3, 3] = 2.0  # without MTM bone never wins clip 3: 75% at every seed
        return arrays

    experiment = make_experiment(tmp_path, name="streams", factors={**STREAMS, "model.mtm": [True, False]},
                                 factor_labels={**LABELS, "model.mtm": "MTM"},
                                 reference={"data.modality": "joint", "model.mtm": True}, score=_score,
                                 ensembles=ENSEMBLES, predictions=votes)
    out = build_report(experiment, metrics=["top1"], formats=["md"], say=lambda line: None)
    rows = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| 2s |")]
    assert rows[0].startswith("| 2s | ✓ | **83.3** ± 14.4") and rows[1].startswith("| 2s | ✗ | 75.0 ± 0.0")
