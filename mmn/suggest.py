""""Did you mean ...?": the nearest valid name for a mistyped one, for every error message that names choices."""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


def closest(word: str, candidates: Iterable[str], aliases: Mapping[str, str] | None = None,
            cutoff: float = 0.6) -> str | None:
    """The candidate `word` most likely meant, or None.

    `aliases` maps names people use for a thing to its name here (e.g. "learning_rate" to "train.lr"); an alias
    wins over spelling, since "train.learning_rate" is nearer to "train.min_lr" in letters than to "train.lr".
    A dotted word is also looked up by its last part ("train.learning_rate" by "learning_rate").
    """
    options = [str(candidate) for candidate in candidates]
    for name in (word, str(word).rsplit(".", 1)[-1]):
        target = (aliases or {}).get(name.lower())
        if target in options:
            return target
    matches = difflib.get_close_matches(str(word), options, n=1, cutoff=cutoff)
    return matches[0] if matches else None
