"""One line per trial that ends, for the driver's console: its time and metric, how many are done of all, an ETA,
for a diverged trial why, and for a failed trial its error and the last lines of its output."""
from __future__ import annotations

import os
import time
from typing import Any

from ray import tune

from .console import LOG
from .trainable import DIVERGED, SAMPLES

OUTPUT_LINES = 10  # of a failed trial's stdout and of its stderr, shown when its Tune invocation ends


def duration(seconds: float) -> str:
    """45s, 3m05s, 2h07m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class TrialProgress(tune.Callback):
    """One line per trial that ends in a Tune invocation of `total` trials: its time and `metric`, how many are done,
    and an ETA. The ETA is the wall time per ended trial so far times the trials left, which counts trials running
    side by side. A failed trial's line (a warning) says its error; the last lines of its output follow when the
    Tune invocation ends (Tune's `log_to_file` keeps them in the trial's working folder on the node it ran on, and
    they are complete once its worker has stopped). A tuning pack counts as its samples, of which `total` counts.
    """

    def __init__(self, total: int, metric: str) -> None:
        self.total, self.metric = total, metric
        self.ended = self.failed = 0
        self.first_start: float | None = None
        self.started: dict[str, float] = {}
        self.failures: list[Any] = []

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        now = time.monotonic()
        self.first_start = self.first_start or now
        self.started.setdefault(trial.trial_id, now)  # a retried trial keeps its first start

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if result.get(DIVERGED):  # it ended normally (not retried), but its record says failed
            self.failed += 1
            LOG.warning(f"trial {trial} diverged after {self._took(trial)}: {result[DIVERGED]}; {self._count(trial)}")
            return
        value = result.get(self.metric)
        shown = f": {self.metric} {value:.2f}" if isinstance(value, (int, float)) else ""
        LOG.info(f"trial {trial} finished in {self._took(trial)}{shown}; {self._count(trial)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1
        self.failures.append(trial)
        LOG.warning(f"trial {trial} failed after {self._took(trial)}: {_last_line(trial.error_file)}; "
                    f"{self._count(trial)}")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """The failed trials' last output lines, now that Tune has stopped their workers (which flushes them)."""
        for trial in self.failures:
            lines = [f"  last lines of {path}:\n" + "\n".join(f"  | {line}" for line in tail)
                     for path, tail in _output_tails(trial)]
            if lines:
                LOG.warning(f"trial {trial} failed; its output ended with\n" + "\n".join(lines))

    def _took(self, trial: Any) -> str:
        return duration(time.monotonic() - self.started.get(trial.trial_id, time.monotonic()))

    def _count(self, trial: Any) -> str:
        """'3/8 done (1 failed), about 2m10s left' after `trial` ended."""
        self.ended += len(trial.config.get(SAMPLES) or ()) or 1
        failed = f" ({self.failed} failed)" if self.failed else ""
        left = self.total - self.ended
        if left <= 0 or self.first_start is None:
            return f"{self.ended}/{self.total} done{failed}"
        eta = (time.monotonic() - self.first_start) / self.ended * left
        return f"{self.ended}/{self.total} done{failed}, about {duration(eta)} left"


def _last_line(path: str | None) -> str:
    """The exception of a trial's error.txt (its last line), or why there is none."""
    if not path or not os.path.exists(path):
        return "no error file was written"
    with open(path, errors="replace") as file:
        lines = [line.strip() for line in file if line.strip()]
    return lines[-1] if lines else "no error file was written"


def _output_tails(trial: Any) -> list[tuple[str, list[str]]]:
    """The path and last lines of a trial's stdout and stderr files that say something, where they are on this
    machine (a trial on another node keeps them there)."""
    tails = []
    for name in ("stdout", "stderr"):
        path = os.path.join(trial.storage.trial_working_directory, name)
        if not os.path.exists(path):
            continue
        with open(path, errors="replace") as file:
            # Ray marks whose output follows (":actor_name:..."), for its own log prefixes
            lines = [line.rstrip("\n") for line in file if not line.startswith((":actor_name:", ":task_name:"))]
        if lines:
            tails.append((path, lines[-OUTPUT_LINES:]))
    return tails
