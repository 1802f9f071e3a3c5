"""Settings dataclasses read back from JSON / TOML mappings."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping


def dataclass_from_mapping(cls, raw: Mapping[str, Any], what: str):
    """``cls(**raw)`` with lists turned into tuples; a key that is not a field of ``cls`` is a
    ValueError naming it (``what`` says which settings, e.g. "trunk")."""
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown {what} settings {sorted(unknown)}; known: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
