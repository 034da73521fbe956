"""``STORE/registry.json``: feature sets, their versions and the registered tables.

The registry is the store's only source of truth: a version or table exists when, and only
when, the registry names it. It is replaced atomically (temporary sibling, fsync, rename), and
that single rename is the commit of every publish.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltr.core.exceptions import StoreError
from dltr.core.io import atomic_write_text
from dltr.core.layout import StoreLayout
from dltr.core.vocabulary import parse_ref

FORMAT = 2
READABLE = (1, 2)  # format 1 holds every version's entry inline; 2 a stub pointing at version.json


@dataclass(frozen=True)
class FeatureSetVersion:
    """One immutable, published version of a feature set."""

    name: str
    version_id: str
    created_at: str
    producer: str
    row_count: int
    dim: int
    schema: list[dict[str, str]]
    lineage: dict[str, Any]
    status: str = "published"  # or "partial" (published with --allow-partial)
    path: str = ""  # relative to the store root
    centers: dict[str, int] = field(default_factory=dict)
    new: bool = True  # False when a publish found this version already there (a no-op)

    @property
    def version(self) -> str:
        return self.version_id

    @property
    def ref(self) -> str:
        """``name@version_id``: the pinned reference accepted by every read."""
        return f"{self.name}@{self.version_id}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("new")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSetVersion:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class Registry:
    """An in-memory copy of the registry file; ``commit()`` writes it back atomically."""

    def __init__(self, root: Path, data: dict[str, Any] | None = None):
        self.root = Path(root)
        self.data = data or {"format": FORMAT, "revision": 0, "feature_sets": {}, "tables": {}}

    @classmethod
    def load(cls, root: Path) -> Registry:
        path = StoreLayout.of(root).registry
        if not path.exists():
            return cls(root)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise StoreError(f"{path}: registry is unreadable ({e}); restore it from a backup") from e
        if data.get("format") not in READABLE:
            raise StoreError(f"{path}: registry format {data.get('format')!r} is not one of {READABLE}; "
                             "upgrade dltr or rebuild the store")
        data["format"] = FORMAT
        return cls(root, data)

    @property
    def revision(self) -> int:
        return int(self.data["revision"])

    def commit(self) -> None:
        """The commit point: one atomic replace of the registry file."""
        self.data["revision"] = self.revision + 1
        self.data["committed_at"] = now_iso()
        atomic_write_text(StoreLayout.of(self.root).registry, json.dumps(self.data, sort_keys=True, separators=(",", ":")))

    # -- feature sets -------------------------------------------------------------------------
    def feature_sets(self) -> list[str]:
        return sorted(self.data["feature_sets"])

    def versions(self, name: str) -> list[FeatureSetVersion]:
        fs = self.data["feature_sets"].get(name)
        if fs is None:
            raise StoreError(f"no feature set named {name!r} in {self.root}; known: {self.feature_sets()}")
        vs = [self._entry(name, k, e) for k, e in fs["versions"].items()]
        return sorted(vs, key=lambda v: v.created_at)

    def _entry(self, name: str, version_id: str, entry: dict[str, Any]) -> FeatureSetVersion:
        """A version from its registry entry: inline (format 1) or the stub of format 2, whose full
        entry lies in the version's folder (``version.json``, written before the commit)."""
        if "version_id" in entry:
            return FeatureSetVersion.from_dict(entry)
        path = StoreLayout.of(self.root).feature_version_entry(name, version_id)
        try:
            return FeatureSetVersion.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise StoreError(f"{path}: entry of registered version {name}@{version_id} is unreadable ({e}); "
                             "restore the version folder from a backup") from e

    def has_version(self, name: str, version_id: str) -> bool:
        return version_id in self.data["feature_sets"].get(name, {}).get("versions", {})

    def resolve(self, ref: str, version: str | None = None) -> FeatureSetVersion:
        """A feature set's latest version, or the pinned one (``name@version`` or a unique prefix)."""
        name, v = parse_ref(ref, version, what='feature set')
        fs = self.data["feature_sets"].get(name)
        if fs is None:
            raise StoreError(f"no feature set named {name!r} in {self.root}; known: {self.feature_sets()}")
        if v is None:
            v = fs["latest"]
        matches = [k for k in fs["versions"] if k == v] or [k for k in fs["versions"] if k.startswith(v)]
        if len(matches) != 1:
            raise StoreError(f"feature set {name!r} has {'no' if not matches else 'more than one'} version "
                             f"matching {v!r}; known: {sorted(fs['versions'])}")
        return self._entry(name, matches[0], fs["versions"][matches[0]])

    def add_version(self, v: FeatureSetVersion) -> None:
        if v.name in self.data["tables"]:
            raise StoreError(f"{v.name!r} is already a table in {self.root}; pick another feature-set name")
        fs = self.data["feature_sets"].setdefault(v.name, {"latest": v.version_id, "versions": {}})
        # a stub: the full entry is the version folder's version.json (commit_version wrote it), so
        # a commit rewrites a few bytes per version, not every version's lineage and schema
        fs["versions"][v.version_id] = {"created_at": v.created_at}
        fs["latest"] = v.version_id

    # -- tables --------------------------------------------------------------------------------
    def tables(self) -> dict[str, dict[str, Any]]:
        return dict(self.data["tables"])

    def table_entry(self, name: str) -> dict[str, Any]:
        entry = self.data["tables"].get(name)
        if entry is None:
            raise StoreError(f"no table named {name!r} in {self.root}; known: {sorted(self.data['tables'])}"
                             + ("; run `dltr store add-cohort`" if name in ("clinical", "labs", "expression",
                                                                          "studies") else ""))
        return entry

    def set_table(self, name: str, entry: dict[str, Any]) -> None:
        if name in self.data["feature_sets"]:
            raise StoreError(f"{name!r} is already a feature set in {self.root}; pick another table name")
        self.data["tables"][name] = entry
