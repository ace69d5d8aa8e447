"""A payload that runs code when unpickled, for the tests that prove no data file or checkpoint can run code."""
from __future__ import annotations

import os
import shlex
from pathlib import Path


class RunsCode:
    """Unpickling this calls os.system to create `marker`: what a malicious data file or checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)
