"""Experiment folders on a local path, an NFS mount or a cloud URI (s3://, gs://), through pyarrow's filesystems."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from mmn.atomic import write_json, write_text
from mmn.folders import EXPERIMENT, EXPERIMENT_FORMAT, check_version


@dataclass(frozen=True)
class Location:
    """A folder on some filesystem; `uri` is what Ray's storage_path takes."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, *parts: str) -> "Location":
        path = "/".join([self.path.rstrip("/"), *parts])
        uri = "/".join([self.uri.rstrip("/"), *parts])
        return Location(self.fs, path, uri)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def read_text(self) -> str:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read().decode()

    def write_text(self, text: str) -> None:
        """Atomically on a local filesystem (temporary file, then rename); object stores write whole objects."""
        if self.is_local:
            write_text(self.path, text)
            return
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(text.encode())

    def find(self, name: str) -> list["Location"]:
        """Every file called `name` below this folder."""
        if not self.exists():
            return []
        selector = pafs.FileSelector(self.path, recursive=True)
        return [Location(self.fs, info.path, info.path) for info in self.fs.get_file_info(selector)
                if info.type == pafs.FileType.File and info.base_name == name]


class StorageError(RuntimeError):
    """The experiment folder cannot be written (not a directory, read-only, disk full); one line says which."""


def cannot_write(where: str, error: OSError) -> StorageError:
    """'cannot write to WHERE: no space left on device' from an OSError, without the errno noise."""
    reason = (error.strerror or str(error) or type(error).__name__)
    return StorageError(f"cannot write to {where}: {reason[:1].lower()}{reason[1:]}")


# One folder name: no separators, no "..", not hidden, so that a name can never leave its storage.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_experiment_name(name: str, where: str = "--name") -> None:
    """Refuse a name that is not one plain folder name (letters, digits, '.', '_', '-'; not starting with '.')."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise StorageError(f"{where}: {name!r} is not a valid experiment name: use letters, digits, '.', '_' and '-' "
                           f"only, not starting with '.' (it names one folder under --storage)")


def locate(storage: str, name: str) -> Location:
    """The experiment folder `name` under `storage` (a folder or a URI); a name that could leave it is refused."""
    check_experiment_name(name)
    if "://" in storage and not storage.startswith("file://"):
        fs, path = pafs.FileSystem.from_uri(storage)
        return Location(fs, path, storage.rstrip("/")).child(name)
    local = Path(storage.removeprefix("file://")).expanduser().resolve()
    return Location(pafs.LocalFileSystem(), str(local), str(local)).child(name)


def read_json(location: Location) -> Any:
    return json.loads(location.read_text())


def write_json_at(location: Location, record: dict[str, Any]) -> None:
    """`record` as our JSON files are written (mmn.atomic.write_json), atomically where the filesystem is local."""
    if location.is_local:
        write_json(Path(location.path), record)
    else:
        location.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))


def check_format(experiment: Location) -> None:
    """Refuse an experiment folder written by a newer version instead of misreading it."""
    marker = experiment.child(EXPERIMENT)
    if marker.exists():
        check_version(read_json(marker), EXPERIMENT_FORMAT, marker.uri, "upgrade mmn-ablate or use another --name")


def local_dir(location: Location) -> Path:
    if not location.is_local:
        raise ValueError(f"{location.uri} is not on a local filesystem")
    os.makedirs(location.path, exist_ok=True)
    return Path(location.path)
