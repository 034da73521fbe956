"""Encoder candidates, CV selection on the training split only, checkpoint and card hash."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from kit.roi_store import roi_store

from dltr.core.exceptions import ModelError
from models import ENCODERS, build_encoder, card_hash, load_encoder
from models.training import EncoderTrainConfig, train_encoder
from pipeline.loaders import DaliRoiPipeline, RoiConfig

AUC_FLOOR = 0.75  # "clearly above chance" on the fixture: chance is 0.5, its fold-AUC sd ~0.1

TINY = EncoderTrainConfig(candidates=("plain", "resnet10"), folds=2, epochs=3, patience=2, batch_size=8,
                          embed_dim=32, width=8, seed=3, roi=RoiConfig(grid=(16, 16, 8)), fold_ensemble=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # centers A (train 75 % / internal 25 %), B and C external; labels alternate within a center
    return roi_store(tmp_path_factory.mktemp("enc") / "store", n_patients=30, seed=5, centers=("A", "B", "C"),
                       train_fraction=0.75, border_every=4)


@pytest.fixture(scope="module")
def trained(store):
    return train_encoder(store, TINY)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_outputs_are_batch_invariant(name):
    torch.manual_seed(0)
    m = build_encoder(name, in_channels=2, embed_dim=24, width=4).eval()
    x = torch.randn(3, 2, 16, 16, 8)
    with torch.no_grad():
        e, logit = m(x)
        singles = [m(x[i:i + 1]) for i in range(3)]
    assert e.shape == (3, 24) and logit.shape == (3,)
    torch.testing.assert_close(e, torch.cat([s[0] for s in singles]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logit, m.head(e).squeeze(1))  # the logit is read from the embedding
    with pytest.raises(ModelError, match="unknown"):
        build_encoder("vit", 2)


def test_selection_uses_only_training_rows_and_beats_chance(store, trained):
    clin = pq.read_table(store / "tables" / "clinical.parquet").to_pylist()
    train_ids = {r["patient_id"] for r in clin if r["split"] == "train"}
    other = {r["patient_id"] for r in clin if r["split"] != "train"}
    assert other and {r["split"] for r in clin} == {"train", "internal", "external"}
    assert set(trained.rows_seen) == train_ids and not set(trained.rows_seen) & other
    card = trained.card
    assert card["n_training_rows"] == len(train_ids)
    assert set(card["candidates"]) == set(TINY.candidates)
    best = card["candidates"][card["architecture"]["name"]]
    assert best["cv_auc_mean"] == max(c["cv_auc_mean"] for c in card["candidates"].values())
    assert best["cv_auc_mean"] >= AUC_FLOOR
    assert np.isclose(best["cv_auc_mean"], np.mean(best["folds"]))


def test_fold_ensemble_scores_every_other_row_without_training_on_it(store, trained):
    """``fold_ensemble``: the k fold encoders' mean read-out of every non-training row is recorded beside the
    out-of-fold scores; those rows are only scored (never in ``rows_seen``), and their read-outs are not the
    refit encoder's."""
    from dltr.core.layout import encoder_crossfit
    from models.heads import CrossFit

    clin = pq.read_table(store / "tables" / "clinical.parquet").to_pylist()
    other = sorted(r["patient_id"] for r in clin if r["split"] != "train")
    cf = CrossFit.load(encoder_crossfit(trained.path))
    assert list(cf.ensemble_patient_id) == other == list(trained.rows_scored)
    assert cf.ensemble.shape == (len(other), cf.oof.shape[1]) and np.isfinite(cf.ensemble).all()
    assert trained.card["crossfit"]["fold_ensemble"]["rows"] == len(other)
    module, card = load_encoder(trained.path)
    with DaliRoiPipeline(store, RoiConfig.from_dict(card["preprocess"]), batch_size=4) as p:
        x, _ = p.run(other)
    with torch.no_grad():
        emb, _ = module(x)
    refit, _ = cf.deep(other, emb.numpy())
    ens, _ = cf.deep(other, emb.numpy(), rows="fold_ensemble")
    np.testing.assert_allclose(ens, cf.ensemble, rtol=1e-6)
    assert np.abs(ens - refit).max() > 1e-3


def test_checkpoint_round_trip(store, trained):
    module, card = load_encoder(store, trained.card_hash)
    assert card == trained.card and (store / "encoders" / card["card_hash"]).is_dir()
    module2, _ = load_encoder(trained.path)
    with DaliRoiPipeline(store, RoiConfig.from_dict(card["preprocess"]), batch_size=4) as p:
        x, _ = p.run(["P000", "P001", "P002"])
    with torch.no_grad():
        e1, l1 = module(x)
        e2, l2 = module2(x)
    assert torch.equal(e1, e2) and e1.shape[1] == card["embed_dim"] and torch.isfinite(l1).all()
    bad = dict(card, seed=card["seed"] + 1)
    (trained.path / "model_card.json").write_text(json.dumps(bad))
    try:
        with pytest.raises(ModelError, match="does not match its content"):
            load_encoder(trained.path)
    finally:
        (trained.path / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True))


def test_card_hash_tracks_every_field(trained):
    card = trained.card
    h = card_hash(card)
    assert h == card["card_hash"]
    assert card_hash(dict(reversed(list(card.items())))) == h  # key order is not content
    for key in ("architecture", "in_channels", "embed_dim", "preprocess", "augmentations",
                "training_rows_hash", "candidates", "seed", "software"):
        changed = json.loads(json.dumps(card))
        v = changed[key]
        changed[key] = (v + 1 if isinstance(v, int) else dict(v, _x=1) if isinstance(v, dict) else v + "x")
        assert card_hash(changed) != h, key


@pytest.mark.slow
def test_training_is_deterministic_on_cpu(store, trained):
    again = train_encoder(store, TINY)
    assert again.card_hash == trained.card_hash


def test_label_free_warm_up_reads_no_label_and_needs_the_descriptors(store):
    """``pretrain_epochs``: the warm-up learns the ROI descriptors alone. Two warm-ups on the same rows with
    opposite labels give the same weights (no label is read), and they differ from no warm-up at all."""
    import dataclasses

    from models.training import _aux_targets, _deterministic, _Trainer, training_rows

    cfg = dataclasses.replace(TINY, pretrain_epochs=2)
    ids, labels = training_rows(store)
    with _deterministic(cfg.seed, cfg.num_threads):
        pipe = DaliRoiPipeline(store, cfg.roi, batch_size=cfg.batch_size, num_threads=cfg.num_threads, with_mask=True)
        x, _, masks = pipe.run(ids)
        pipe.close()
        aux, _ = _aux_targets(ids, x, masks, cfg)
        states = []
        for c, y in ((cfg, labels), (cfg, 1 - labels), (TINY, labels)):
            trainer = _Trainer(store, c, torch.device("cpu"), set(), aux)
            model, *_ = trainer.fit("plain", ids, dict(zip(ids, y.tolist(), strict=True)), seed=7, epochs=0)
            states.append(model.state_dict())
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(states[0], states[1]) and not same(states[0], states[2])
    with pytest.raises(ModelError, match="pretrain_epochs"):
        EncoderTrainConfig(pretrain_epochs=2, aux_weight=0.0)
