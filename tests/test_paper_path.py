"""The paper path end to end, with real Ray, real files and the real model at the smallest size: the shipped
`streams` spec trains its four streams, `ablations.evaluate` runs their best weights on the test split, and the
test report has a row per stream and per ensemble; with the labels withheld it writes server files instead."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ablations import evaluate as ablations_evaluate
from ablations import run as ablations_run
from analysis.report import main as report_main
from mmn.folders import predictions_file, split_result_file

SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
         "model.num_frames": 8, "train.batch_size": 8}
STREAMS = ("joint", "bone", "joint_motion", "bone_motion")


def _withhold_test_labels(experiment: Path) -> None:
    """Make the evaluated test split look like MA-52's, whose labels are withheld: labels −1, no metrics."""
    for record_path in experiment.rglob(split_result_file("test")):
        record = json.loads(record_path.read_text())
        record_path.write_text(json.dumps({**record, "metrics": None}))
        predictions_path = record_path.parent / predictions_file("test")
        with np.load(predictions_path) as stored:
            arrays = dict(stored)
        arrays["labels"] = np.full_like(arrays["labels"], -1)
        with open(predictions_path, "wb") as handle:
            np.savez_compressed(handle, **arrays)


@pytest.mark.ray
@pytest.mark.slow
def test_streams_trained_evaluated_on_test_and_reported_with_ensembles(ray_session, tmp_path, monkeypatch):
    monkeypatch.setattr(ablations_run, "_report", lambda outcome: None)  # built below, per split
    sets = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    runs = tmp_path / "runs"
    assert ablations_run.main(["streams", "--storage", str(runs), "--epochs", "1", "--seeds", "2", *sets]) == 0
    experiment = runs / "streams"
    assert ablations_evaluate.main([str(experiment), "--split", "test"]) == 0

    assert report_main([str(experiment), "--split", "test", "--format", "md"]) == 0
    table = (experiment / "report" / "test" / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    labels = [row.split("|")[1].strip().rstrip(" †").replace("\\_", "_") for row in rows]  # Markdown escapes _
    assert labels == [*STREAMS, "2s", "4s"]  # every stream, then each ensemble, in the spec's order

    _withhold_test_labels(experiment)
    assert report_main([str(experiment), "--split", "test", "--format", "md"]) == 0
    servers = sorted(path.name for path in (experiment / "report" / "test").glob("submission_*.zip"))
    assert len(servers) == len(STREAMS) + 2 and any("2s" in name for name in servers)
    with zipfile.ZipFile(experiment / "report" / "test" / servers[0]) as archive:
        rows = list(csv.reader(io.StringIO(archive.read("prediction.csv").decode())))
    clips = len(np.load(next(experiment.rglob(predictions_file("test"))))["names"])
    assert rows[0][:2] == ["vid", "action_pred_1"] and len(rows) == 1 + clips  # one row per test clip
