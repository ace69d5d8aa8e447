"""The MA-52 server submission: zip layout, CSV content read back, video ids, atomic writing."""
from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mmn.layouts import MA52_ACTION_TO_BODY
from mmn.predictions import write_submission

HEADER = ["vid", "action_pred_1", "action_pred_2", "action_pred_3", "action_pred_4", "action_pred_5",
          "body_pred_1", "body_pred_2", "body_pred_3", "body_pred_4", "body_pred_5"]


def _read(path: Path) -> list[list[str]]:
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["prediction.csv"]
        return list(csv.reader(io.StringIO(archive.read("prediction.csv").decode())))


def _logits() -> np.ndarray:
    # Decreasing by index, so that without overrides the ranking is 0, 1, 2, ..., 51.
    logits = np.tile(-np.arange(52) / 100, (3, 1))
    # Row 0 ranks 51, 50, 0, 49, 5 first, then 1, 2, 3, 4, 6, ... .
    #   Bodies of those actions: 6, 6, 0, 6, 1 (one per action); distinct, in order of first appearance: 6, 0, 1,
    #   then 2 (from action 11) and 3 (action 24).
    for action, value in zip([51, 50, 0, 49, 5], [10, 9, 8, 7, 6]):
        logits[0, action] = value
    # Row 1 keeps the plain ranking: actions 0-4 (all body 0); distinct bodies 0, 1 (action 5), 2 (11), 3 (24), 4 (32).
    # Row 2 is all ties, ranked by index: the same as row 1.
    logits[2] = 0
    return logits


def test_round_trip_with_default_ids(tmp_path: Path) -> None:
    out = write_submission(_logits(), tmp_path / "submission.zip")
    assert out == tmp_path / "submission.zip"
    rows = _read(out)
    assert rows == [
        HEADER,
        ["test0000.mp4", "51", "50", "0", "49", "5", "6", "0", "1", "2", "3"],
        ["test0001.mp4", "0", "1", "2", "3", "4", "0", "1", "2", "3", "4"],
        ["test0002.mp4", "0", "1", "2", "3", "4", "0", "1", "2", "3", "4"],
    ]


def test_given_names_get_mp4_appended_once(tmp_path: Path) -> None:
    out = write_submission(torch.tensor(_logits()), tmp_path / "sub.zip", names=["test0007", "test0003.mp4", "x"])
    assert [row[0] for row in _read(out)[1:]] == ["test0007.mp4", "test0003.mp4", "x.mp4"]


def test_body_preds_agree_with_action_ranking(tmp_path: Path) -> None:
    logits = np.random.default_rng(0).normal(size=(200, 52))
    rows = _read(write_submission(logits, tmp_path / "s.zip"))[1:]
    for row, scores in zip(rows, logits):
        actions = [int(v) for v in row[1:6]]
        bodies = [int(v) for v in row[6:11]]
        assert actions == np.argsort(-scores)[:5].tolist()
        assert bodies[0] == MA52_ACTION_TO_BODY[actions[0]]  # what the server's body Top-1 reads
        assert len(set(bodies)) == 5
        # Each body is ranked by its best action's logit.
        best = [max(scores[a] for a in range(52) if MA52_ACTION_TO_BODY[a] == b) for b in bodies]
        assert best == sorted(best, reverse=True)


def test_overwrites_atomically_and_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "submission.zip"
    write_submission(_logits(), out)
    first = out.read_bytes()
    with pytest.raises(ValueError, match="2 names for 3 rows"):
        write_submission(_logits(), out, names=["a", "b"])
    assert out.read_bytes() == first  # a failed write keeps the previous submission
    write_submission(_logits()[:1], out)
    assert len(_read(out)) == 2
    assert [p.name for p in out.parent.iterdir()] == ["submission.zip"]  # no temporary file left


def test_rejects_logits_that_are_not_ma52(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="52 columns"):
        write_submission(np.zeros((2, 32)), tmp_path / "s.zip")
    assert not (tmp_path / "s.zip").exists()


def test_crash_while_writing_removes_the_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", fail)
    with pytest.raises(OSError, match="disk full"):
        write_submission(_logits(), tmp_path / "submission.zip")
    assert list(tmp_path.iterdir()) == []
