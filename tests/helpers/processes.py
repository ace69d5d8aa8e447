"""The processes a test started, found through Linux /proc, so a test kills its own trial workers and no others."""
from __future__ import annotations

import os
from pathlib import Path


def descendants(pid: int) -> dict[int, str]:
    """pid → command line of every process below `pid`."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            todo.append(child)
    return found


def trial_workers() -> set[int]:
    """Ray trial actors of the test session's Ray instance (its raylet is a child of the pytest process)."""
    return {pid for pid, command in descendants(os.getpid()).items() if command.startswith("ray::ImplicitFunc")}
