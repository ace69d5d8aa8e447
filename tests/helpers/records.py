"""Reading what a trial wrote, in tests: its history, every epoch's record in order; files below a folder that a
run is still writing."""
from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any

from mmn.folders import HISTORY


def read_history(folder: str | Path) -> list[dict[str, Any]]:
    """The epoch records of the trial folder `folder` (its history.jsonl), first epoch first."""
    return [json.loads(line) for line in (Path(folder) / HISTORY).read_text().splitlines()]


def live_paths(folder: str | Path, pattern: str) -> list[Path]:
    """Every file or folder named like `pattern` below `folder`, also while a run writes there: os.walk passes over
    a folder that goes as it is listed (Ray deletes a trial's older checkpoint_* folders), where Path.rglob raises."""
    return [Path(root, name) for root, folders, files in os.walk(folder)
            for name in fnmatch.filter([*folders, *files], pattern)]
