"""One driver per experiment folder: a second `ablations.run` on the same folder stops with one line naming the
driver that holds it, before it starts Ray or writes anything there.

On a local path or an NFS mount the lock is a file holding the holder's host, PID and start time, written whole and
then hard-linked into place, which fails atomically where a lock exists (also on NFS). A lock whose process is gone
on this host is stale: it is taken over with a message. On an object store (s3://, gs://), which has no atomic
create, the lock is a lease object that the holder renews while it runs; one whose lease has run out is taken over,
so a driver that died frees the folder after at most LEASE_S seconds.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from mmn.atomic import write_text
from mmn.folders import DRIVER_LOCK

from .storage import Location, StorageError, cannot_write

LOG = logging.getLogger("ablations")
LEASE_S = 600.0  # an object-store lease's length; the holder renews it every third of that


class ExperimentLocked(StorageError):
    """Another driver runs this experiment now."""


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "lease_until": time.time() + LEASE_S}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    return f"PID {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"


def _read(location: Location) -> dict[str, Any] | None:
    """The lock's holder, {} for a lock file that cannot be read (torn, hand-edited), None when there is none."""
    try:
        holder = json.loads(location.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _stale(holder: dict[str, Any], remote: bool) -> bool:
    if not holder:
        return True
    if remote:
        return float(holder.get("lease_until", 0)) < time.time()
    return holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1)))


def _refusal(experiment: Location, lock: Location, holder: dict[str, Any]) -> ExperimentLocked:
    fix = ("wait for it, or stop it" if holder.get("host") == socket.gethostname() else
           f"wait for it; if that driver is gone (its machine is down), delete {lock.uri}")
    return ExperimentLocked(f"{experiment.uri} is being run by another driver ({_describe(holder)}): {fix}, or run "
                            f"under another --name")


def _take_local(experiment: Location, lock: Location, holder: dict[str, Any]) -> None:
    os.makedirs(experiment.path, exist_ok=True)
    draft = f"{lock.path}.{holder['token']}"  # written whole first, then linked: the lock is never seen torn
    write_text(draft, json.dumps(holder))
    try:
        for _ in range(3):  # a stale lock is moved aside, then linked anew; another driver may win that race
            try:
                os.link(draft, lock.path)  # fails if the lock exists, atomically (also on NFS)
                return
            except FileExistsError:
                other = _read(lock)
            if other is None:
                continue
            if not _stale(other, remote=False):
                raise _refusal(experiment, lock, other)
            LOG.warning("taking over the lock of a driver that is gone (%s)",
                        _describe(other) if other else "its lock file was unreadable")
            try:
                os.replace(lock.path, f"{draft}.stale")
                os.unlink(f"{draft}.stale")
            except FileNotFoundError:
                pass  # another driver moved it first; the next attempt sees who won
        raise ExperimentLocked(f"{experiment.uri}: could not take the driver lock {lock.uri} (others keep taking "
                               f"it); try again")
    finally:
        os.unlink(draft)


def _take_remote(experiment: Location, lock: Location, holder: dict[str, Any]) -> None:
    other = _read(lock)
    if other is not None and not _stale(other, remote=True):
        raise _refusal(experiment, lock, other)
    if other is not None:
        LOG.warning("taking over the lease of a driver that is gone (%s)", _describe(other))
    lock.write_text(json.dumps(holder))
    time.sleep(1.0)  # object stores keep the last write: read back, so that of two drivers racing only one goes on
    winner = _read(lock) or {}
    if winner.get("token") != holder["token"]:
        raise _refusal(experiment, lock, winner)


@contextmanager
def driver_lock(experiment: Location) -> Iterator[None]:
    """Hold the experiment's lock while the block runs; ExperimentLocked (one line) if another driver holds it."""
    lock, holder = experiment.child(DRIVER_LOCK), _holder()
    remote = not experiment.is_local
    try:
        (_take_remote if remote else _take_local)(experiment, lock, holder)
    except OSError as error:  # not a folder, read-only, a full disk: the experiment's first write fails here
        raise cannot_write(experiment.uri, error) from None
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lock, holder, stop), daemon=True) if remote else None
    if renewer:
        renewer.start()
    try:
        yield
    finally:
        stop.set()
        try:
            if (_read(lock) or {}).get("token") == holder["token"]:
                lock.fs.delete_file(lock.path)
        except OSError:  # left behind, it names a process that is gone: the next run takes it over
            pass


def _renew(lock: Location, holder: dict[str, Any], stop: threading.Event) -> None:
    while not stop.wait(LEASE_S / 3):
        holder["lease_until"] = time.time() + LEASE_S
        try:
            lock.write_text(json.dumps(holder))
        except OSError as error:  # the next renewal tries again; the lease lasts until then
            LOG.warning("could not renew the driver lease %s: %s", lock.uri, error)
