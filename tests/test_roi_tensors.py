"""Materialised ROI tensors (models.materialise_rois, feature set ``roi_tensors``): the stored tensors are
the DALI loader's output bit for bit, an extraction reads them instead of the volumes and gives the
same features, and a changed input or RoiConfig never reuses a stale tensor."""

# ruff: noqa: F811 - the fixtures imported from test_extract are arguments of the tests below

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_extract import (  # the extraction tests' store and Ray fixtures
    PHASES,
    _assert_rows_equal,
    _copy,
    base_store,  # noqa: F401 - fixture
    local_rows,  # noqa: F401 - fixture
    ray_cluster,  # noqa: F401 - fixture
)

from dltr.core.hashing import content_hash
from features import PACKED, STORAGE_KEY, FeatureStore
from models import ROI_TENSORS, find_roi_tensors, input_checksum, materialise_rois
from pipeline.extract import ExtractConfig, extract_features, extract_local
from pipeline.loaders import DaliRoiPipeline, RoiConfig

ROI = RoiConfig(phases=PHASES, grid=(16, 16, 8))  # the recipe of test_extract's encoder card


def _tensors(store: FeatureStore, ref: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    t = store.read(ref).sort_by("patient_id")
    n = t.num_rows
    x = t.column("embedding").combine_chunks().flatten().to_numpy().reshape(n, ROI.n_channels, *ROI.grid)
    return t.column("patient_id").to_pylist(), x, np.asarray(t.column("roi_box").to_pylist(), np.int32)


def test_tensors_are_the_loaders_output_bitwise_with_lineage(base_store, tmp_path, capsys):
    root = _copy(base_store, tmp_path)
    rep = materialise_rois(root, ROI, batch_size=3)
    assert (rep.status, rep.n_computed, rep.n_reused, rep.errors) == ("published", 10, 0, {})
    store = FeatureStore(root)
    ids, x, boxes = _tensors(store, rep.ref)
    assert ids == [f"P{i:03d}" for i in range(10)]
    with DaliRoiPipeline(root, ROI, batch_size=4) as pipe:  # another batch size than the writer's
        ref_x, ref_boxes = pipe.run(ids)
    assert np.array_equal(x, ref_x.numpy()) and np.array_equal(boxes, ref_boxes)
    assert np.abs(x).max() > 0
    # lineage: the recipe's hash and the hash of the inputs' checksums, computed here from the studies table
    studies = pq.read_table(root / "ingest" / "studies.parquet").to_pylist()
    per: dict[str, dict[str, str]] = {}
    for r in studies:
        per.setdefault(r["patient_id"], {})[r["phase"]] = r["source_sha256"]
        per[r["patient_id"]]["mask"] = r["mask_sha256"]
    checks = sorted(input_checksum({p: d[p] for p in PHASES}, d["mask"]) for d in per.values())
    v = store.resolve(rep.ref)
    assert v.lineage["preprocess_hash"] == ROI.content_hash() and v.lineage["inputs_hash"] == content_hash(checks)
    assert v.dim == 3 * 16 * 16 * 8 and ROI_TENSORS in store.feature_sets()
    # stored packed: one binary value of the tensor's float32 bytes a row (a memory copy to read)
    files = sorted((root / v.path).glob("center=*/*.parquet"))
    assert v.lineage[STORAGE_KEY] == PACKED and files
    assert {pq.read_schema(f).field("embedding").type for f in files} == {pa.binary(4 * v.dim)}
    from dltr.cli import main

    capsys.readouterr()
    assert main(["materialise-rois", "--store", str(root), "--json"]) == 0  # the encoder's RoiConfig = ROI
    out = json.loads(capsys.readouterr().out)
    assert (out["status"], out["ref"]) == ("exists", rep.ref)  # unchanged inputs: nothing to do


@pytest.mark.slow
def test_first_extraction_materialises_and_the_next_reads_tensors_not_volumes(ray_cluster, base_store, local_rows,
                                                                            tmp_path):
    root = _copy(base_store, tmp_path)
    first = extract_features(root, config=ExtractConfig(workers=1, batch_size=4, rois="materialise"))
    assert (first.status, first.n_computed, first.n_from_tensors) == ("published", 10, 0)
    store = FeatureStore(root)
    ids, x, boxes = _tensors(store, first.roi_tensors_written)
    with DaliRoiPipeline(root, ROI, batch_size=3) as pipe:  # the loader, apart from the Ray actors
        ref_x, ref_boxes = pipe.run(ids)
    assert ids == sorted(local_rows.column("patient_id").to_pylist())
    assert np.array_equal(x, ref_x.numpy()) and np.array_equal(boxes, ref_boxes)
    _assert_rows_equal(store.read("dltr", first.version_id), local_rows)
    shutil.move(root / "volumes.zarr", tmp_path / "volumes-away")  # a volume read now fails
    rep = extract_features(root, config=ExtractConfig(name="dltr2", workers=1, batch_size=4))
    assert (rep.status, rep.n_computed, rep.n_from_tensors, rep.n_errors) == ("published", 10, 10, 0)
    assert rep.roi_tensors == first.roi_tensors_written and rep.roi_tensors_written is None
    _assert_rows_equal(FeatureStore(root).read("dltr2", rep.version_id), local_rows)


@pytest.mark.slow
def test_changed_volume_or_recipe_never_reuses_a_stale_tensor(ray_cluster, base_store, local_rows, tmp_path):
    import zarr

    root = _copy(base_store, tmp_path)
    first = materialise_rois(root, ROI, batch_size=4)
    # re-ingest P003's portal phase with other values: its checksum changes
    arr = zarr.open_array(root / "volumes.zarr" / "P003" / "portal", mode="r+")
    vol = (np.asarray(arr[...]) + 100).astype(np.int16)
    arr[...] = vol
    path = root / "ingest" / "studies.parquet"
    rows = pq.read_table(path).to_pylist()
    for r in rows:
        if (r["patient_id"], r["phase"]) == ("P003", "portal"):
            r["source_sha256"] = hashlib.sha256(vol.tobytes()).hexdigest()
    pq.write_table(pa.Table.from_pylist(rows), path)
    store = FeatureStore(root)
    from pipeline.extract._scope import build_scope

    scope = build_scope(store, root, None, "dltr")
    want = dict(zip(scope.table.column("patient_id").to_pylist(), scope.table.column("input_checksum").to_pylist(),
                    strict=True))
    hit = find_roi_tensors(store, ROI, want)
    assert hit is not None and sorted(hit.patient_ids) == sorted(set(want) - {"P003"})
    assert find_roi_tensors(store, RoiConfig(phases=PHASES, grid=(8, 8, 8)), want) is None  # another recipe
    rep = extract_features(root, config=ExtractConfig(workers=1, batch_size=4))
    assert (rep.n_computed, rep.n_from_tensors) == (10, 9)
    got = FeatureStore(root).read("dltr", rep.version_id)
    is3 = pa.compute.equal(got.column("patient_id"), "P003")
    _assert_rows_equal(got.filter(is3), extract_local(root, batch_size=4, patient_ids=["P003"]))
    _assert_rows_equal(got.filter(pa.compute.invert(is3)), local_rows.filter(
        pa.compute.not_equal(local_rows.column("patient_id"), "P003")))
    # a new tensor version: 9 rows copied, P003 loaded again and equal to the loader's new output
    second = materialise_rois(root, ROI, batch_size=4)
    assert (second.status, second.n_reused, second.n_computed) == ("published", 9, 1) and second.ref != first.ref
    ids, x, _ = _tensors(FeatureStore(root), second.ref)
    with DaliRoiPipeline(root, ROI, batch_size=4) as pipe:
        new_x, _ = pipe.run(["P003"])
    assert np.array_equal(x[ids.index("P003")], new_x.numpy()[0])


def test_rois_option_is_checked():
    from dltr.core.exceptions import DltrError

    with pytest.raises(DltrError, match="rois='sometimes'"):
        ExtractConfig(rois="sometimes")


def test_tensor_path_two_workers_survive_a_crashed_actor(ray_cluster, base_store, local_rows, tmp_path):
    """Extraction from tensors streams blocks from plain Ray actors (no Ray Data): with two workers each
    block is encoded once, a hard-crashed actor is restarted and its stream retried; the features equal the
    same blocks encoded in this process bit for bit, and the volume path's to ATOL (other batch composition)."""
    root = _copy(base_store, tmp_path)
    materialise_rois(root, ROI, batch_size=3)
    shutil.move(root / "volumes.zarr", tmp_path / "volumes-away")  # any volume read would fail
    ray_cluster.unlink()  # the first actor to encode a block dies hard (os._exit), once
    rep = extract_features(root, config=ExtractConfig(workers=2, batch_size=4))
    assert ray_cluster.exists(), "no actor crashed: the test did not exercise a restart"
    assert (rep.status, rep.n_computed, rep.n_from_tensors, rep.n_errors) == ("published", 10, 10, 0)
    rows = FeatureStore(root).read("dltr", rep.version_id)
    assert sorted(rows.column("patient_id").to_pylist()) == [f"P{i:03d}" for i in range(10)]
    _assert_rows_equal(rows, local_rows)
    from pipeline.extract._tensor_job import tensor_blocks
    from pipeline.extract._worker import EncodeWorker

    hit = find_roi_tensors(FeatureStore(root), ROI, dict(zip(rows.column("patient_id").to_pylist(),
                                                             rows.column("input_checksum").to_pylist(), strict=True)))
    enc = EncodeWorker(str(next((root / "encoders").glob("*"))))
    here = pa.concat_tables([enc(b).select(rows.column_names) for b in tensor_blocks(hit.files, hit.patient_ids, 4)])
    _assert_rows_equal(rows, here.cast(rows.schema), atol=0.0)
