"""Encoder checkpoints: a folder with the weights (safetensors) and the model card (JSON), at
``StoreLayout.encoder(card_hash)`` inside a store."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from dltr.core.exceptions import ModelError
from dltr.core.hashing import content_hash
from dltr.core.io import publish_dir
from dltr.core.layout import StoreLayout, encoder_card, encoder_crossfit, encoder_weights
from models.encoders import Encoder3d, build_from_arch


def card_hash(card: dict[str, Any]) -> str:
    """``content_hash`` of the card without its own ``card_hash`` field."""
    return content_hash({k: v for k, v in card.items() if k != "card_hash"})


def software_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out = {}
    for pkg in ("dltr", "torch", "nvidia-dali-cuda120", "numpy", "zarr"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def save_encoder(store_root: str | Path, module: Encoder3d, card: dict[str, Any],
                 crossfit: bytes | None = None) -> Path:
    """Write weights, card (and the cross-fitting record) into a temporary sibling, then publish the folder
    in one rename."""
    from safetensors.torch import save_file

    card = dict(card)
    card["card_hash"] = card_hash(card)
    final = StoreLayout.of(store_root).encoder(card["card_hash"])
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{card['card_hash']}.", dir=final.parent))
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(encoder_weights(tmp)))
    encoder_card(tmp).write_text(json.dumps(card, indent=2, sort_keys=True))
    if crossfit is not None:
        encoder_crossfit(tmp).write_bytes(crossfit)
    publish_dir(tmp, final)
    return final


def load_encoder(path: str | Path, card_hash_: str | None = None) -> tuple[Encoder3d, dict[str, Any]]:
    """(module in eval mode, card) from an encoder folder, or from a store root and a card hash."""
    from safetensors.torch import load_file

    folder = StoreLayout.of(path).encoder(card_hash_) if card_hash_ else Path(path)
    card_path = encoder_card(folder)
    if not card_path.is_file():
        raise ModelError(f"{card_path}: no model card; give an encoder folder or --store with a card hash "
                         "from `dltr train-encoder`")
    card = json.loads(card_path.read_text())
    if card.get("card_hash") != card_hash(card):
        raise ModelError(f"{card_path}: card_hash {card.get('card_hash')!r} does not match its content "
                         f"({card_hash(card)}); the card was edited - retrain or restore it")
    module = build_from_arch(card["architecture"])
    try:
        module.load_state_dict(load_file(str(encoder_weights(folder))), strict=True)
    except (RuntimeError, FileNotFoundError) as e:
        raise ModelError(f"{encoder_weights(folder)}: cannot load weights for "
                         f"{card['architecture']}: {e}".splitlines()[0]) from None
    return module.eval(), card
