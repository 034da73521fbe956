"""Head registry: ``STORE/heads/<name>/<version>/head.json`` + the head's state files, no pickle.

A head is saved as data only, so that loading it runs no code from the store and does not tie it
to exact library versions: each head class has ``get_state()`` (a dict of JSON values, NumPy arrays
and raw bytes) and ``from_state(state)``. The registry writes the JSON values to ``state.json``
(coefficients as JSON numbers, exact for float64), the arrays to ``state.safetensors`` (the MLP's
weights) and each bytes value to a file of its own name (XGBoost's booster in its own UBJSON format,
``estimator.model.ubj``). Loading accepts only these formats and only the registered head classes;
a ``head.pkl`` is refused.

A version is content-addressed: ``content_hash`` of the head's name, its lineage (feature-set
name and version, training-frame row hash, clinical inputs), hyper-parameters, seed and the
SHA-256 of the state files. Publishing writes every file into a temporary sibling folder and
renames it into place in one step (``dltr.core.io.publish_dir``); ``heads/<name>/latest.json`` is
then replaced atomically, so a reader never sees a half-written head.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dltr.core.exceptions import ModelError
from dltr.core.hashing import content_hash, json_default
from dltr.core.io import atomic_write_text, publish_dir
from dltr.core.layout import HEAD_META, HEAD_STATE, HEAD_TENSORS, StoreLayout

__all__ = ["HeadRegistry", "estimator_from_state", "estimator_state", "from_kind", "head_state_class",
           "serialize_head", "state_kind"]

STATE_JSON, STATE_TENSORS = HEAD_STATE, HEAD_TENSORS
_KIND, _TENSOR, _FILE = "__kind__", "__tensor__", "__file__"
_CLASSES: dict[str, type] = {}


def head_state_class(cls: type) -> type:
    """Register a head class that ``get_state()``/``from_state()`` round-trip (the load whitelist)."""
    _CLASSES[cls.__name__] = cls
    return cls


def state_kind(obj: Any) -> dict[str, Any]:
    """``{"__kind__": class name, **obj.get_state()}``: a nested head's state inside another's."""
    if type(obj).__name__ not in _CLASSES:
        raise ModelError(f"{type(obj).__name__} has no registered state format; it cannot be saved")
    return {_KIND: type(obj).__name__, **obj.get_state()}


def from_kind(state: dict[str, Any]) -> Any:
    kind = state.get(_KIND)
    if kind not in _CLASSES:
        raise ModelError(f"head state of kind {kind!r} is not one of the known heads {sorted(_CLASSES)}")
    return _CLASSES[kind].from_state({k: v for k, v in state.items() if k != _KIND})


def estimator_state(est: Any, **learned: Any) -> dict[str, Any]:
    """``{"params": the keyword-only hyper-parameters, **learned}`` (the estimator contract's split)."""
    params = {k: v for k, v in vars(est).items() if not k.endswith("_") and not k.startswith("_")}
    return {"params": params, **learned}


def estimator_from_state(cls: type, state: dict[str, Any], *, tuples: tuple[str, ...] = ()) -> Any:
    """An unfitted ``cls`` with the saved hyper-parameters (JSON lists back to tuples where named)."""
    params = {k: tuple(v) if k in tuples else v for k, v in state["params"].items()}
    return cls(**params)


def _split(obj: Any, path: str, tensors: dict[str, np.ndarray], files: dict[str, bytes]) -> Any:
    if isinstance(obj, dict):
        return {str(k): _split(v, f"{path}.{k}" if path else str(k), tensors, files) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{path}.{i}", tensors, files) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        tensors[path] = np.ascontiguousarray(obj)
        return {_TENSOR: path}
    if isinstance(obj, (bytes, bytearray)):
        files[path] = bytes(obj)
        return {_FILE: path}
    return obj


def _join(obj: Any, tensors: dict[str, np.ndarray], files: dict[str, bytes]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        if set(obj) == {_FILE}:
            return files[obj[_FILE]]
        return {k: _join(v, tensors, files) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors, files) for v in obj]
    return obj


def serialize_head(head: Any) -> dict[str, bytes]:
    """The state files of a head, name -> bytes (``state.json``, ``state.safetensors``, raw files)."""
    from safetensors.numpy import save

    tensors: dict[str, np.ndarray] = {}
    files: dict[str, bytes] = {}
    doc = _split(state_kind(head), "", tensors, files)
    out = {STATE_JSON: json.dumps(doc, indent=1, sort_keys=True, default=json_default).encode()}
    if tensors:
        out[STATE_TENSORS] = save(dict(sorted(tensors.items())))
    out.update(files)
    return out


def _files_sha256(files: dict[str, bytes]) -> str:
    return content_hash({k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())}, length=64)


class HeadRegistry:
    """Versioned, lineage-carrying storage of trained heads under ``STORE/heads``."""

    def __init__(self, store_root: str | Path):
        self.layout = StoreLayout.of(store_root)
        self.root = self.layout.heads

    def publish(self, name: str, head: Any, *, lineage: dict[str, Any], hyperparameters: dict[str, Any],
                seed: int, metrics: dict[str, Any], cutoff: float, extra: dict[str, Any] | None = None) -> str:
        files = serialize_head(head)
        ident = {"name": name, "lineage": lineage, "hyperparameters": hyperparameters, "seed": seed,
                 "head_sha256": _files_sha256(files)}
        version = content_hash(ident)
        meta = {**ident, "version": version, "kind": type(getattr(head, "estimator", head)).__name__,
                "format": "state-v1", "files": sorted(files), "metrics": metrics, "cutoff": cutoff,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **(extra or {})}
        final = self.layout.head(name, version)
        if not (final / HEAD_META).exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=final.parent))
            for fname, blob in files.items():
                (tmp / fname).write_bytes(blob)
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
        p = self.layout.head(name, version) / HEAD_META
        if not p.exists():
            raise ModelError(f"head {name}@{version} not found under {self.root}; known: {self.versions(name)}")
        return json.loads(p.read_text())

    def load(self, name: str, version: str | None = None) -> tuple[Any, dict[str, Any]]:
        """The trained head object and its metadata (state files only; a pickle is refused)."""
        from safetensors.numpy import load

        meta = self.meta(name, version)
        folder = self.layout.head(name, meta["version"])
        ref = f"{name}@{meta['version']}"
        if meta.get("format") != "state-v1" or any(p.suffix in (".pkl", ".pickle") for p in folder.iterdir()):
            raise ModelError(f"{folder}: head {ref} is a pickle; pickled heads are refused (loading one could "
                             "run code from the store); retrain it with `dltr train-heads`")
        names = list(meta.get("files") or [])
        files = {}
        for fname in names:
            p = folder / fname
            if p.parent != folder or not p.is_file():
                raise ModelError(f"{p}: state file of head {ref} is missing; retrain with `dltr train-heads`")
            files[fname] = p.read_bytes()
        if _files_sha256(files) != meta["head_sha256"]:
            raise ModelError(f"{folder}: the state files of head {ref} do not match its recorded SHA-256; "
                             "the files are corrupt, retrain with `dltr train-heads`")
        tensors = load(files[STATE_TENSORS]) if STATE_TENSORS in files else {}
        return from_kind(_join(json.loads(files[STATE_JSON]), tensors, files)), meta
