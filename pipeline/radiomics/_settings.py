"""The radiomics recipe: a pyradiomics parameter file (YAML or JSON) plus the phases to read.

The file holds pyradiomics' own keys, ``imageType``, ``featureClass`` and ``setting`` (see its
documentation, "Parameter File"), and optionally ``phases`` (the phases to compute, in order; default:
the phases every ingested patient has). ``RadiomicsSettings.content_hash()`` hashes the parsed recipe
and the library version: it is the feature set's ``preprocess_hash``, so a changed bin width or a new
pyradiomics makes a new version. Comment keys (starting with ``_``) are dropped before hashing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from dltr.core.exceptions import DltrError
from dltr.core.hashing import canonical_json, content_hash

LIBRARY = "pyradiomics"
_KEYS = ("phases", "imageType", "featureClass", "setting")


def library_version() -> str:
    from importlib.metadata import version

    return f"{LIBRARY}=={version(LIBRARY)}"


@dataclass(frozen=True)
class RadiomicsSettings:
    """A parsed recipe. ``params()`` is the dict handed to ``RadiomicsFeatureExtractor``."""

    image_types: dict[str, Any] = field(default_factory=lambda: {"Original": {}})
    feature_classes: dict[str, list[str]] = field(default_factory=dict)
    setting: dict[str, Any] = field(default_factory=dict)
    phases: tuple[str, ...] | None = None
    source: str = "default"

    def params(self) -> dict[str, Any]:
        return {"imageType": json.loads(canonical_json(self.image_types)),
                "featureClass": {k: (list(v) or None) for k, v in self.feature_classes.items()},
                "setting": json.loads(canonical_json(self.setting))}

    def to_dict(self) -> dict[str, Any]:
        return {"phases": list(self.phases) if self.phases is not None else None, "imageType": self.image_types,
                "featureClass": {k: list(v) for k, v in self.feature_classes.items()}, "setting": self.setting}

    def content_hash(self) -> str:
        """The preprocess hash: the recipe (not where it was read from) and the library version."""
        return content_hash({"recipe": self.to_dict(), "library": library_version()})

    def with_phases(self, phases) -> RadiomicsSettings:
        return RadiomicsSettings(self.image_types, self.feature_classes, self.setting, tuple(phases), self.source)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> RadiomicsSettings:
        d = {k: v for k, v in d.items() if not str(k).startswith("_")}
        unknown = sorted(set(d) - set(_KEYS))
        if unknown:
            raise DltrError(f"{source}: unknown key(s) {unknown} in the radiomics settings; known: {list(_KEYS)}")
        phases = d.get("phases")
        if phases is not None and (not isinstance(phases, list) or not phases
                                   or not all(isinstance(p, str) and p for p in phases)):
            raise DltrError(f"{source}: phases {phases!r} must be a non-empty list of phase names, or null")
        classes = d.get("featureClass") or {}
        if not isinstance(classes, dict):
            raise DltrError(f"{source}: featureClass must map class names to feature lists, got {classes!r}")
        s = cls(image_types=dict(d.get("imageType") or {"Original": {}}),
                feature_classes={str(k): list(v or []) for k, v in classes.items()},
                setting=dict(d.get("setting") or {}), phases=tuple(phases) if phases else None, source=source)
        s.validate()
        return s

    def validate(self) -> None:
        """Let pyradiomics check the recipe against its own schema (one line on failure)."""
        import logging

        import radiomics
        from radiomics import featureextractor

        radiomics.setVerbosity(logging.ERROR)
        try:
            featureextractor.RadiomicsFeatureExtractor(self.params())
        except Exception as e:  # noqa: BLE001 - pykwalify's SchemaError and pyradiomics' ValueError alike
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DltrError(f"{self.source}: pyradiomics refuses the settings ({first}); see pyradiomics' "
                            "'Parameter File' documentation") from None


def default_settings_path() -> Path:
    return Path(str(files("pipeline.radiomics") / "default_settings.json"))


def load_settings(path: str | Path | None = None) -> RadiomicsSettings:
    """A recipe from a YAML (``.yaml``/``.yml``) or JSON file; ``None`` reads dltr's default."""
    p = default_settings_path() if path is None else Path(path)
    if not p.is_file():
        raise DltrError(f"{p}: no such radiomics settings file; give a pyradiomics parameter file (YAML or JSON)")
    text = p.read_text()
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text) or {}
        else:
            d = json.loads(text)
    except Exception as e:  # noqa: BLE001 - yaml.YAMLError / json.JSONDecodeError
        raise DltrError(f"{p}: not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                        f"({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise DltrError(f"{p}: the settings must be a mapping with keys {list(_KEYS)}")
    return RadiomicsSettings.from_dict(d, source="default" if path is None else str(p))
