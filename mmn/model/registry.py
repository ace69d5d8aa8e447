"""Your own module in one of MMN's slots, by name, without a fork (docs/custom.md, "Your own module").

A user's file registers a module class for a slot under a name, and a config names it (`model.mtm: se_gate`):

    from mmn.model.registry import register

    @register("mtm", "se_gate")
    class SqueezeExcitationGate(nn.Module):
        def __init__(self, channels: int, members: int = 1): ...
        def forward(self, y, motion, out=None): ...

Slots and what their modules are built with and called with (channels-last tensors; with K members, member k's
channels are [k·C, (k+1)·C) of the last axis, as everywhere in the model):

    mtm      Module(channels=2q, members=K); forward(y (N, T, V, K·q), motion (N, T, V, K·2q), out=None) → like y
    msm      Module(channels=2q, num_joints=V, members=K); forward(y, motion, out=None) → like y
    pos_enc  Module(config=ModelConfig, members=K); forward(x (N, T, V, K·C), index_t) → like x

A user's code runs only because the user asked for it: `import_user_modules` imports the files or modules named on
a command line (`--import`) or in a spec's `imports:` list. A config value only looks a name up, and a data file or
a checkpoint never imports anything. The imported files' contents go into the code fingerprint
of a run that imports them (mmn.provenance.code_fingerprint), so results of an edited module count as stale.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is not imported here: mmn.model.config (and so every --help) looks names up in this module
    from torch import nn

SLOTS = {
    "mtm": "the temporal modulation (built-in: true, false)",
    "msm": "the skeletal modulation (built-in: released, graph, off)",
    "pos_enc": "the positional encoding (built-in: stpe, learned, sinusoidal, none)",
}
BUILT_IN = {"mtm": (True, False), "msm": ("released", "graph", "off"),
            "pos_enc": ("stpe", "learned", "sinusoidal", "none")}

_modules: dict[str, dict[str, type[nn.Module]]] = {slot: {} for slot in SLOTS}
_imported: dict[str, Path] = {}  # what import_user_modules imported: as named → its file


class RegistryError(ValueError):
    """A registration or an import that cannot be done; the message says what to do."""


def register(slot: str, name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: the module class fills `slot` when a config names `name` there."""
    if slot not in SLOTS:
        raise RegistryError(f"unknown slot {slot!r}: register for one of {', '.join(SLOTS)}")
    if not isinstance(name, str) or not name.isidentifier() or name.lower() in {"true", "false", "none", "off"}:
        raise RegistryError(f"{name!r} cannot name a module: use letters, digits and _ (e.g. se_gate)")
    if name in BUILT_IN[slot]:
        raise RegistryError(f"{name!r} is a built-in {slot}: register yours under another name")

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        known = _modules[slot].get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:  # the same class imported again is fine
            raise RegistryError(f"{slot} {name!r} is registered already, by {known.__module__}.{known.__qualname__}: "
                                f"register {cls.__qualname__} under another name")
        _modules[slot][name] = cls
        return cls

    return add


def registered(slot: str) -> dict[str, type[nn.Module]]:
    """The user modules registered for `slot`, by name."""
    return dict(_modules[slot])


def is_registered(slot: str, name: Any) -> bool:
    """Whether `name` is a user's module registered for `slot` (False for what is not a slot)."""
    return isinstance(name, str) and name in _modules.get(slot, {})


def build(slot: str, name: str, members: int = 1, **arguments: Any) -> nn.Module:
    """The module registered as `name` for `slot`, built with `arguments` (and `members` when it is more than 1)."""
    if name not in _modules[slot]:
        raise RegistryError(f"model.{slot}={name!r} is not a registered module{hint(slot, name)}")
    cls = _modules[slot][name]
    if members > 1:
        if "members" not in inspect.signature(cls).parameters:
            raise RegistryError(f"{slot} {name!r} ({cls.__qualname__}) takes no `members` argument, so it cannot be "
                                f"in a trial pack: give it one (docs/custom.md), or run with --pack off")
        arguments["members"] = members
    return cls(**arguments)


def packable(slot: str, name: Any) -> bool:
    """Whether the module `name` names in `slot` can be built for several members (a built-in always can)."""
    cls = _modules[slot].get(name) if isinstance(name, str) else None
    return cls is None or "members" in inspect.signature(cls).parameters


def hint(slot: str, name: Any) -> str:
    """What to add to a message refusing `name` for `slot`, when it could be a user's module: how to register it."""
    if slot not in SLOTS or not isinstance(name, str) or not name.isidentifier():
        return ""
    known = ", ".join(_modules[slot])
    return (f", nor a registered module ({f'registered: {known}' if known else 'none is registered'}): for your "
            f"own, import the file that registers it (--import FILE, or the spec's `imports:`)")


def import_user_modules(names: Sequence[str], base: Path | None = None) -> list[str]:
    """Import each of `names`, a .py file (relative to `base`, else the working folder) or an importable module, so
    that its `register` calls run. Returns them resolved (a file as its absolute path), as a Ray worker, whose
    working folder differs, imports them again, and as module_files looks them up. A file imports once per process."""
    done = []
    for name in names:
        text = str(name)
        if text.endswith(".py") or "/" in text:
            path = Path(text) if Path(text).is_absolute() or base is None else base / text
            path = path.resolve()
            resolved = str(path)
            if not path.is_file():
                raise RegistryError(f"cannot import {text}: no such file ({path})")
            if resolved not in _imported:
                spec = importlib.util.spec_from_file_location(f"mmn_user_{path.stem}_{abs(hash(path)) % 10**8}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                try:
                    spec.loader.exec_module(module)
                except Exception as error:
                    del sys.modules[spec.name]
                    raise RegistryError(f"importing {text} failed: {type(error).__name__}: {error}") from error
        else:
            resolved = text
            try:
                module = importlib.import_module(text)
            except ImportError as error:
                raise RegistryError(f"cannot import {text}: {error} (name a .py file, or a module on the path)") \
                    from None
            path = Path(module.__file__ or text)
        _imported[resolved] = path
        done.append(resolved)
    return done


def module_files(names: Sequence[str]) -> list[Path]:
    """The files of `names`, as imported by import_user_modules (import them first), for the code fingerprint."""
    return sorted({_imported[name] for name in names if name in _imported})
