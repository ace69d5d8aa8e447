"""Which planned trials train together as one trial pack (mmn.pack, mmn.train.fit_pack): `--pack auto|N|off`.

Trials may share a pack when their configs differ only in per-member settings (mmn.pack.PER_MEMBER: the seed, the
learning rate, ...), so the seeds of a variant always can. A pack is one Ray Tune trial asking for what one solo
trial asks; each member still writes its own trial folder, inside the pack's.

`auto` packs where it measurably helps: on a GPU, where one small trial leaves most of it idle (up to MAX_AUTO
members); on CPUs it leaves trials alone, where a pack of K steps no faster than K trials side by side
(docs/performance.md, "Trial packs").
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mmn.model import registry
from mmn.pack import pack_key

from .expand import TrialPlan

MAX_AUTO = 8  # members of an automatic pack on a GPU


@dataclass(frozen=True)
class PlannedPack:
    """Members trained as one Tune trial; `name` is its trial folder's (e.g. `pack-mtm=true,seeds=1-3`)."""

    name: str
    members: tuple[TrialPlan, ...]


def pack_size(choice: str | int, on_gpu: bool) -> int:
    """Members per pack for `--pack choice`, for trials on a GPU or not."""
    if choice == "off":
        return 1
    if choice == "auto":
        return MAX_AUTO if on_gpu else 1
    return int(choice)


def plan_packs(plans: Sequence[TrialPlan], size: int) -> list[PlannedPack]:
    """`plans` in packs of at most `size` members of one pack key, in plan order; trials alone when size is 1."""
    groups: dict[str, list[TrialPlan]] = {}
    for plan in plans:
        # a user's module that takes no `members` (mmn.model.registry) trains alone
        alone = not all(registry.packable(slot, getattr(plan.config.model, slot)) for slot in registry.SLOTS)
        groups.setdefault(plan.config_hash if alone else pack_key(plan.config), []).append(plan)
    packs: list[PlannedPack] = []
    names: set[str] = set()
    for group in groups.values():
        for start in range(0, len(group), size):
            members = tuple(group[start:start + size])
            name = _name(members)
            name = name if name not in names else f"{name},{len(packs) + 1}"  # two packs of one variant and seeds
            names.add(name)
            packs.append(PlannedPack(name, members))
    return packs


def _name(members: tuple[TrialPlan, ...]) -> str:
    if len(members) == 1:
        return members[0].trial_key
    variants = list(dict.fromkeys(m.variant_key for m in members))
    seeds = sorted({m.seed for m in members})
    consecutive = seeds == list(range(seeds[0], seeds[-1] + 1))
    seed_text = (f"seed={seeds[0]}" if len(seeds) == 1 else f"seeds={seeds[0]}-{seeds[-1]}" if consecutive
                 else f"seeds={'+'.join(map(str, seeds))}")
    head = variants[0] if len(variants) == 1 else f"{variants[0]}+{len(variants) - 1}"
    return f"pack-{head},{seed_text}" if head else f"pack-{seed_text}"
