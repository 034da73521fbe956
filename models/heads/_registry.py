"""Head registry: ``STORE/heads/<name>/<version>/head.pkl`` + ``head.json``.

A version is content-addressed: ``content_hash`` of the head's name, its lineage (feature-set
name and version, training-frame row hash, clinical inputs), hyper-parameters, seed and the
SHA-256 of the serialised head. Publishing writes both files into a temporary sibling folder
and renames it into place in one step (``dltr.core.io.publish_dir``); ``heads/<name>/latest.json``
is then replaced atomically, so a reader never sees a half-written head.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import tempfile
from pathlib import Path
from typing import Any

from dltr.core.exceptions import ModelError
from dltr.core.hashing import content_hash, json_default
from dltr.core.io import atomic_write_text, publish_dir
from dltr.core.layout import HEAD_META, StoreLayout

__all__ = ["HeadRegistry", "serialize_head"]


def serialize_head(head: Any) -> bytes:
    """The bytes stored as ``head.pkl`` (pickle protocol 5; learned state only)."""
    return pickle.dumps(head, protocol=5)


class HeadRegistry:
    """Versioned, lineage-carrying storage of trained heads under ``STORE/heads``."""

    def __init__(self, store_root: str | Path):
        self.root = StoreLayout.of(store_root).heads

    def publish(self, name: str, head: Any, *, lineage: dict[str, Any], hyperparameters: dict[str, Any],
                seed: int, metrics: dict[str, Any], cutoff: float, extra: dict[str, Any] | None = None) -> str:
        blob = serialize_head(head)
        sha = hashlib.sha256(blob).hexdigest()
        ident = {"name": name, "lineage": lineage, "hyperparameters": hyperparameters, "seed": seed,
                 "head_sha256": sha}
        version = content_hash(ident)
        meta = {**ident, "version": version, "kind": type(getattr(head, "estimator", head)).__name__, "metrics": metrics,
                "cutoff": cutoff, "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                **(extra or {})}
        final = self.root / name / version
        if not (final / HEAD_META).exists():
            (self.root / name).mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root / name))
            (tmp / "head.pkl").write_bytes(blob)
            (tmp / HEAD_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=json_default))
            publish_dir(tmp, final)
        atomic_write_text(self.root / name / "latest.json", json.dumps({"version": version}))
        return version

    def names(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "latest.json").exists())

    def versions(self, name: str) -> list[str]:
        d = self.root / name
        return sorted(p.name for p in d.iterdir() if (p / HEAD_META).exists()) if d.exists() else []

    def latest(self, name: str) -> str:
        p = self.root / name / "latest.json"
        if not p.exists():
            raise ModelError(f"no head {name!r} in {self.root}; run `dltr train-heads` first")
        return json.loads(p.read_text())["version"]

    def meta(self, name: str, version: str | None = None) -> dict[str, Any]:
        version = version or self.latest(name)
        p = self.root / name / version / HEAD_META
        if not p.exists():
            raise ModelError(f"head {name}@{version} not found under {self.root}; known: {self.versions(name)}")
        return json.loads(p.read_text())

    def load(self, name: str, version: str | None = None) -> tuple[Any, dict[str, Any]]:
        """The trained head object and its metadata."""
        meta = self.meta(name, version)
        blob = (self.root / name / meta["version"] / "head.pkl").read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta["head_sha256"]:
            raise ModelError(f"head {name}@{meta['version']}: head.pkl does not match its recorded SHA-256; "
                             "the file is corrupt, retrain with `dltr train-heads`")
        return pickle.loads(blob), meta
