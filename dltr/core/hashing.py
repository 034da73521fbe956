"""Content hashes: every artefact carries the hashes of what produced it."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def tree_sha256(path: str | Path) -> str:
    """SHA-256 over a file, or over every file below a folder (names and bytes, sorted)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode())
        h.update(b"\0")
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that hashes are taken of."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=json_default)


def from_dict_checked(cls: type, d: dict[str, Any], error: type[Exception]) -> Any:
    """``cls(**d)`` for a config dataclass, refusing unknown keys with ``error`` naming them.

    Configs round-trip through ``to_dict`` / ``from_dict`` so that each artefact stores the exact recipe
    that made it; a key this version does not know is an error, never silently dropped.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise error(f"{cls.__name__}.from_dict: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**d)


def content_hash(obj: Any, length: int = 16) -> str:
    """Short hex SHA-256 of an object's canonical JSON (dataclasses and dicts alike)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return o.as_posix()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError(f"cannot hash object of type {type(o).__name__}")


def pseudonym(patient_id: str, key: str | None) -> str:
    """The stored key of a patient: ``patient_id``, or ``"PS" + HMAC-SHA256(key, patient_id)[:16]``.

    The one pseudonym of the project: ingest (volumes, studies) and ``store add-cohort`` (clinical,
    labs, expression) apply it with the same key, so every table joins on the same value."""
    if not key:
        return patient_id
    return "PS" + hmac.new(key.encode(), patient_id.encode(), hashlib.sha256).hexdigest()[:16]
