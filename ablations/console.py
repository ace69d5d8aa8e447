"""What the driver says while an experiment runs goes through the `ablations` logger (status lines, and one line
per trial that ends: ablations.progress); a command line decides what is shown.

`console` shows it on stderr: `-q` warnings and failed trials only, `-v` also Ray's own tables and every trial's
output as it runs. From Python, `logging.basicConfig(level=logging.INFO)` shows the status lines; warnings and
failed trials are shown without it. Light: no Ray here, so a command line's --help stays fast.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

LOG = logging.getLogger("ablations")


@contextlib.contextmanager
def console(level: int = logging.INFO) -> Iterator[None]:
    """Show the `ablations` logger's messages from `level` up on stderr, as `[ablations] message`, while the block
    runs; the logger is left as it was."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[ablations] %(message)s"))
    saved = LOG.level, LOG.propagate
    LOG.addHandler(handler)
    LOG.setLevel(level)
    LOG.propagate = False  # once is enough: not again through a handler of the root logger
    try:
        yield
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(saved[0])
        LOG.propagate = saved[1]


def verbose() -> bool:
    """Whether the user asked for everything (`-v`): Ray's progress tables and each trial's output as it runs."""
    return LOG.isEnabledFor(logging.DEBUG)
