"""Ctrl-C (SIGINT) and SIGTERM stop an experiment cleanly: the driver stops its trials and says how to go on.

Tune's own SIGINT handler is switched off (TUNE_DISABLE_SIGINT_HANDLER, set by the runner): after a Ctrl-C it lists
the running trials as failed and advises Ray's `Tuner.restore`, while our reruns resume by themselves. Here the
first signal raises `Interrupted` in the driver's main thread, which unwinds the run (the driver lock, Ray and the
staging folders are released on the way out); later signals are ignored until the driver has stopped its trials.
Ray may turn it into a plain KeyboardInterrupt on the way (its waits check for signals themselves), so the block
yields a `SignalStop` that remembers which signal came.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by `signum`; `message` says what was kept and how to go on."""

    def __init__(self, signum: int, message: str = "interrupted") -> None:
        super().__init__(message)
        self.signum, self.message = signum, message

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process that a signal stopped: 130 for SIGINT, 143 for
        SIGTERM."""
        return 128 + self.signum


class SignalStop:
    """SIGINT and SIGTERM handlers that raise `Interrupted` once; `received` lists the signals that came."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> None:
        """Make the handlers ours, again after ray.init: it installs SIGTERM handlers of its own in the driver."""
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            for signum in SIGNALS:
                signal.signal(signum, self._interrupt)

    @property
    def signum(self) -> int:
        """The first signal received; SIGINT when none was (a KeyboardInterrupt of another origin)."""
        return self.received[0] if self.received else signal.SIGINT

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.received:  # the trials are being stopped already: a second Ctrl-C must not cut that short
            print("still stopping the trials...", file=sys.stderr, flush=True)
            return
        self.received.append(signum)
        raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SignalStop]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` once; the previous handlers come back afterwards."""
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    stop = SignalStop()
    stop.install()
    try:
        yield stop
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in previous.items():
                signal.signal(signum, handler)
