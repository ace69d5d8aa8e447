"""MA-52 test predictions in the evaluation server's format (docs/spec-mmn.md, "Benchmark metrics").

The server takes a zip holding `prediction.csv` with columns vid, action_pred_1..5, body_pred_1..5, each row's
predictions best first. MMN has no body head, so the body predictions are derived from the action ranking: the five
distinct body labels in the order their best-ranked action appears. This is what ranking the bodies by the score of
their best action gives, so the columns read as a genuine top-5 at the body level (as they do for models with a body
head), rather than repeating a body once per action; body_pred_1 is still the body of action_pred_1, which is all
the server's body Top-1 uses.
"""
from __future__ import annotations

import csv
import io
import os
import zipfile
from pathlib import Path
from typing import IO, Any, Sequence

import numpy as np

from .atomic import atomic_write
from .layouts import MA52_ACTION_TO_BODY, MA52_BODY_NAMES
from .metrics import action_to_body, top_k_indices

_TOP = 5
_CSV_NAME = "prediction.csv"
_HEADER = (["vid"] + [f"action_pred_{i}" for i in range(1, _TOP + 1)]
           + [f"body_pred_{i}" for i in range(1, _TOP + 1)])


def _top_bodies(ranking: np.ndarray) -> np.ndarray:
    """The first `_TOP` distinct bodies along each row of a full action ranking (N, 52), shape (N, _TOP)."""
    num_rows, num_actions = ranking.shape
    bodies = action_to_body(ranking.reshape(-1)).reshape(ranking.shape)
    # Position of each body's best-ranked action; a body's actions all exist, so every body gets a position.
    first = np.full((num_rows, len(MA52_BODY_NAMES)), num_actions)
    rows = np.repeat(np.arange(num_rows), num_actions)
    np.minimum.at(first, (rows, bodies.reshape(-1)), np.tile(np.arange(num_actions), num_rows))
    return np.argsort(first, axis=1, kind="stable")[:, :_TOP]  # positions are distinct: no ties


def _video_ids(count: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"test{i:04d}.mp4" for i in range(count)]
    if len(names) != count:
        raise ValueError(f"got {len(names)} names for {count} rows of logits")
    return [name if name.endswith(".mp4") else f"{name}.mp4" for name in map(str, names)]


def write_submission(logits: Any, out_path: str | os.PathLike[str], names: Sequence[str] | None = None) -> Path:
    """Write `out_path` (e.g. submission.zip): a zip holding the server's prediction.csv for MA-52 test logits.

    logits: (N, 52) scores, numpy or torch, in test-set order. names: the clips' video names (".mp4" appended when
    missing); by default row i is "test{i:04d}.mp4". The zip is written to a temporary file beside `out_path` and
    moved into place (`mmn.atomic`), so a crash never leaves a truncated submission. Returns the path written.
    """
    num_actions = len(MA52_ACTION_TO_BODY)
    ranking = top_k_indices(logits, num_actions)
    if ranking.shape[1] != num_actions:
        raise ValueError(f"MA-52 logits need {num_actions} columns, got {ranking.shape[1]}")
    vids = _video_ids(len(ranking), names)
    bodies = _top_bodies(ranking)

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(_HEADER)
    for vid, actions, body in zip(vids, ranking[:, :_TOP].tolist(), bodies.tolist()):
        writer.writerow([vid, *actions, *body])

    def write_zip(handle: IO[bytes]) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(_CSV_NAME, text.getvalue())

    return atomic_write(out_path, write_zip)
