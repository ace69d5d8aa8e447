"""Reading what a trial wrote, in tests: its history, every epoch's record in order."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmn.folders import HISTORY


def read_history(folder: str | Path) -> list[dict[str, Any]]:
    """The epoch records of the trial folder `folder` (its history.jsonl), first epoch first."""
    return [json.loads(line) for line in (Path(folder) / HISTORY).read_text().splitlines()]
