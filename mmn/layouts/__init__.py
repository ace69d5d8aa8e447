"""Skeleton layouts as data files: the two benchmarks' (ma52.yaml, imigue.yaml, see docs/spec-mmn.md, "Data of the
release"), an example (coco17.yaml), and any file a user writes (docs/custom.md).

A layout file names the joints in the order of the data's joint axis, the centre joint, the bones as [parent, child]
pairs, the body parts (the model's joint order) and, optionally, the class names and each body level's classes.
Joints are named by index or by name wherever a joint is expected. `load_layout` checks a file and says what is wrong
in one line that starts `file:line:`.

What is checked of the bones, and why not more: every joint must be joined to the centre joint through bones, and
reading each pair as (parent, child), the first pair naming a joint as child giving its parent (what data.bones=parent
computes), no joint may be its own ancestor: the bones form a forest, and with every joint joined to the centre it is
one skeleton. The release's own MA-52 list is not a tree rooted at the centre: its 44 bones on 44 joints close one
cycle (nose-head-neck: (17,18), (0,18), (0,17); the neck is named as child twice), and read as (parent, child) its one
root is joint 31 (chin), not the centre joint 19 (hip). Demanding a tree rooted at the centre would refuse the
release's list, and changing the list would change the bone streams the release computes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mmn.suggest import closest
from mmn.yamlfile import YamlError, kind, line_of, load_yaml

FOLDER = Path(__file__).parent  # the layout files shipped in the package
BENCHMARKS = ("ma52", "imigue")  # the data sets the release trains on: data.dataset's choices
_REQUIRED = ("joints", "centre", "bones", "body_parts")
_KEYS = ("name", *_REQUIRED, "classes", "body_levels")


class LayoutError(ValueError):
    """A layout file that cannot be used; one line that starts `file:line:` and says what to fix."""


@dataclass(frozen=True)
class SkeletonLayout:
    name: str
    joint_names: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]  # (parent, child) in the file's order
    centre_joint: int  # subtracted (at frame 0) before scaling
    body_part_order: tuple[int, ...]  # raw joint index at each model position
    body_parts: tuple[tuple[str, int], ...]  # (part name, number of joints) along body_part_order
    class_names: tuple[str, ...]  # empty where the file names no classes
    body_names: tuple[str, ...] = ()  # body levels, where the file has them
    action_to_body: tuple[int, ...] = ()  # body level of each class, where the file has them
    source: str = ""  # the file it was read from

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def with_classes_of(self, other: "SkeletonLayout") -> "SkeletonLayout":
        """This skeleton with `other`'s classes and body levels (a COCO-17 skeleton of MA-52's videos)."""
        return replace(self, class_names=other.class_names, body_names=other.body_names,
                       action_to_body=other.action_to_body)


def shipped() -> dict[str, Path]:
    """The layout files in the package, by name: ma52, imigue and the coco17 example."""
    return {path.stem: path for path in sorted(FOLDER.glob("*.yaml"))}


def find_layout(name_or_path: str) -> Path:
    """The file of a shipped layout's name, or `name_or_path` itself where it is a file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    files = shipped()
    if name_or_path in files:
        return files[name_or_path]
    close = closest(name_or_path, files)
    hint = f" (did you mean {close}?)" if close else ""
    raise LayoutError(f"layout {name_or_path!r} is neither a file nor a shipped layout{hint}; name one of "
                      f"{', '.join(files)} or the path of a layout YAML file")


def load_layout(name_or_path: str | Path) -> SkeletonLayout:
    """The checked layout of a file (or a shipped layout's name); LayoutError says what is wrong, with file and line."""
    path = find_layout(str(name_or_path))
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size)  # a file edited in place is read again


@functools.lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int, size: int) -> SkeletonLayout:
    try:
        document = load_yaml(path)
    except YamlError as error:
        raise LayoutError(str(error)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise LayoutError(f"{path}: cannot read it: {error}") from None
    return _Reader(path, document).layout()


class _Reader:
    """One layout file's checks, in the order a reader fixes them: keys, joints, centre, bones, parts, classes."""

    def __init__(self, path: str, document: Any) -> None:
        self.path, self.doc = path, document

    def fail(self, container: Any, key: Any, message: str) -> LayoutError:
        line = line_of(container, key)
        return LayoutError(f"{self.path}{f':{line}' if line else ''}: {message}")

    def layout(self) -> SkeletonLayout:
        doc = self.doc
        if not isinstance(doc, dict):
            raise self.fail(doc, None, f"expected a mapping with {', '.join(_REQUIRED)}, got {kind(doc)}")
        for key in doc:
            if key not in _KEYS:
                close = closest(str(key), _KEYS)
                hint = f"did you mean {close}?" if close else f"the keys are {', '.join(_KEYS)}"
                raise self.fail(doc, key, f"unknown key {key!r} ({hint})")
        for key in _REQUIRED:
            if key not in doc:
                raise self.fail(doc, None, f"no {key!r}: a layout names {', '.join(_REQUIRED)} (see docs/custom.md)")
        name = doc.get("name", Path(self.path).stem)
        if not isinstance(name, str) or not name:
            raise self.fail(doc, "name", f"name must be a word naming the layout, got {kind(name)}")
        joints = self.names(doc, "joints", "joint")
        centre = self.joint(doc, "centre", joints, "the centre joint")
        bones = self.bones(doc["bones"], joints, centre)
        order, parts = self.body_parts(doc, joints)
        classes = self.names(doc, "classes", "class") if "classes" in doc else ()
        body_names, action_to_body = self.body_levels(doc, classes) if "body_levels" in doc else ((), ())
        return SkeletonLayout(name, joints, bones, centre, order, parts, classes, body_names, action_to_body,
                              self.path)

    def names(self, container: dict, key: str, what: str) -> tuple[str, ...]:
        """A non-empty list of distinct names."""
        values = container[key]
        if not isinstance(values, list) or not values:
            raise self.fail(container, key, f"{key} must be a list of {what} names, got {kind(values)}")
        first: dict[str, int] = {}
        for position, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise self.fail(values, position, f"{what} {position} must be a name, got {kind(value)}")
            if value in first:
                raise self.fail(values, position, f"{what} name {value!r} is given twice ({what}s {first[value]} "
                                                  f"and {position}); give each {what} its own name")
            first[value] = position
        return tuple(values)

    def index(self, container: Any, key: Any, names: tuple[str, ...], what: str, role: str) -> int:
        """A joint or class given by index or by name."""
        value = container[key]
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value < len(names):
                return value
            raise self.fail(container, key, f"{role} is {what} {value}, out of range: give an index in "
                                            f"[0, {len(names)}) or a {what} name")
        if isinstance(value, str) and value in names:
            return names.index(value)
        close = closest(str(value), names) if isinstance(value, str) else None
        hint = f" (did you mean {close}?)" if close else ""
        raise self.fail(container, key, f"{role} is {kind(value)}, which is no {what} of this layout{hint}: give "
                                        f"an index in [0, {len(names)}) or one of the {what} names")

    def joint(self, container: Any, key: Any, joints: tuple[str, ...], role: str) -> int:
        return self.index(container, key, joints, "joint", role)

    def bones(self, bones: Any, joints: tuple[str, ...], centre: int) -> tuple[tuple[int, int], ...]:
        if not isinstance(bones, list):
            raise self.fail(self.doc, "bones", f"bones must be a list of [parent, child] pairs, got {kind(bones)}")
        pairs: list[tuple[int, int]] = []
        seen: dict[frozenset, int] = {}
        parent: dict[int, int] = {}
        for position, pair in enumerate(bones):
            if not isinstance(pair, list) or len(pair) != 2:
                raise self.fail(bones, position, f"bone {position} must be a [parent, child] pair of joints, got "
                                                 f"{kind(pair)}")
            a, b = (self.joint(pair, side, joints, f"bone {position}'s {('parent', 'child')[side]}")
                    for side in (0, 1))
            if a == b:
                raise self.fail(bones, position, f"bone {position} joins joint {joints[a]!r} to itself; remove it")
            if frozenset((a, b)) in seen:
                raise self.fail(bones, position, f"bone {position} repeats bone {seen[frozenset((a, b))]} "
                                                 f"({joints[a]}-{joints[b]}); remove one")
            seen[frozenset((a, b))] = position
            parent.setdefault(b, a)  # the first pair naming a joint as child gives its parent (data.bones=parent)
            if self._ancestors(parent, b, b):
                raise self.fail(bones, position, f"bone {position} ({joints[a]} → {joints[b]}) closes a loop of "
                                                 f"parents: {joints[b]} would be its own ancestor; reverse or "
                                                 "remove it")
            pairs.append((a, b))
        self.connected(pairs, joints, centre)
        return tuple(pairs)

    @staticmethod
    def _ancestors(parent: dict[int, int], joint: int, target: int) -> bool:
        """Whether `target` is a proper ancestor of `joint`."""
        seen = set()
        while joint in parent and joint not in seen:
            seen.add(joint)
            joint = parent[joint]
            if joint == target:
                return True
        return False

    def connected(self, pairs: list[tuple[int, int]], joints: tuple[str, ...], centre: int) -> None:
        neighbours: dict[int, set[int]] = {joint: set() for joint in range(len(joints))}
        for a, b in pairs:
            neighbours[a].add(b)
            neighbours[b].add(a)
        reached, frontier = {centre}, [centre]
        while frontier:
            for other in neighbours[frontier.pop()] - reached:
                reached.add(other)
                frontier.append(other)
        loose = [joint for joint in range(len(joints)) if joint not in reached]
        if loose:
            names = ", ".join(joints[joint] for joint in loose[:5]) + (" ..." if len(loose) > 5 else "")
            raise self.fail(self.doc["joints"], loose[0], f"{len(loose)} joint(s) not joined to the centre joint "
                                                          f"{joints[centre]!r} by bones ({names}); add a bone from "
                                                          "each to the skeleton")

    def body_parts(self, doc: dict, joints: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[tuple[str, int], ...]]:
        parts = doc["body_parts"]
        if not isinstance(parts, dict) or not parts:
            raise self.fail(doc, "body_parts", "body_parts must map each part's name to its list of joints, got "
                                               f"{kind(parts)}")
        order: list[int] = []
        where: dict[int, str] = {}
        for part, members in parts.items():
            if not isinstance(members, list) or not members:
                raise self.fail(parts, part, f"body part {part!r} must be a non-empty list of joints, got "
                                             f"{kind(members)}")
            for position in range(len(members)):
                joint = self.joint(members, position, joints, f"joint {position} of body part {part!r}")
                if joint in where:
                    raise self.fail(members, position, f"joint {joints[joint]!r} is in body parts {where[joint]!r} "
                                                       f"and {part!r}; keep it in one")
                where[joint] = str(part)
                order.append(joint)
        missing = [joints[joint] for joint in range(len(joints)) if joint not in where]
        if missing:
            raise self.fail(doc, "body_parts", f"joint(s) {', '.join(missing)} in no body part; add each to one")
        return tuple(order), tuple((str(part), len(members)) for part, members in parts.items())

    def body_levels(self, doc: dict, classes: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
        levels = doc["body_levels"]
        if not classes:
            raise self.fail(doc, "body_levels", "body_levels needs a classes list to refer to; add one")
        if not isinstance(levels, dict) or not levels:
            raise self.fail(doc, "body_levels", "body_levels must map each body level to its list of classes, "
                                                f"got {kind(levels)}")
        body: dict[int, int] = {}
        for level, (name, members) in enumerate(levels.items()):
            if not isinstance(members, list) or not members:
                raise self.fail(levels, name, f"body level {name!r} must be a non-empty list of classes, got "
                                              f"{kind(members)}")
            for position in range(len(members)):
                label = self.index(members, position, classes, "class", f"class {position} of body level {name!r}")
                if label in body:
                    raise self.fail(members, position, f"class {classes[label]!r} is in two body levels; keep it in "
                                                       "one")
                body[label] = level
        missing = [name for label, name in enumerate(classes) if label not in body]
        if missing:
            raise self.fail(doc, "body_levels", f"class(es) {', '.join(missing[:5])} in no body level; add each to "
                                                "one")
        return tuple(str(name) for name in levels), tuple(body[label] for label in range(len(classes)))


LAYOUTS: dict[str, SkeletonLayout] = {name: load_layout(FOLDER / f"{name}.yaml") for name in BENCHMARKS}

MA52_CLASS_NAMES: tuple[str, ...] = LAYOUTS["ma52"].class_names
# Body-part label of each action (SPEC: "Benchmark metrics").
MA52_BODY_NAMES: tuple[str, ...] = LAYOUTS["ma52"].body_names
MA52_ACTION_TO_BODY: tuple[int, ...] = LAYOUTS["ma52"].action_to_body
IMIGUE_CLASS_NAMES: tuple[str, ...] = LAYOUTS["imigue"].class_names


def data_layout(dataset: str, layout: str | Path | None = None) -> SkeletonLayout:
    """What data is read with (data.dataset, data.layout): `layout`'s skeleton, with `dataset`'s classes where its
    file names none; without `layout`, `dataset`'s own."""
    benchmark = get_layout(dataset)
    if layout is None:
        return benchmark
    skeleton = load_layout(layout)
    return skeleton if skeleton.num_classes else skeleton.with_classes_of(benchmark)


def get_layout(dataset: str | SkeletonLayout) -> SkeletonLayout:
    """The layout of `dataset` ("ma52" or "imigue"), with an error naming the choices otherwise; a layout is
    returned as it is."""
    if isinstance(dataset, SkeletonLayout):
        return dataset
    try:
        return LAYOUTS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(sorted(LAYOUTS))}") from None
