"""Bad input and crashes: each corruption gives its named error row and no partial output while the
sound patients complete; ``--strict`` fails the run; a run killed with SIGKILL and re-run equals an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import zarr
from kit.images import image_cohort

from dltr.cli import main as cli_main
from pipeline.ingest import IngestConfig, ingest_cohort

REPO = Path(__file__).resolve().parents[1]


def _corrupt(root: Path) -> dict[str, str]:
    """Break one patient per case; returns {patient_id: expected error code}."""
    img = root / "images"
    p = img / "P000" / "arterial.nii.gz"  # truncated gzip
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    m = nib.load(str(img / "P001" / "mask.nii.gz"))  # mask with another shape
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), m.affine), str(img / "P001" / "mask.nii.gz"))
    (img / "P002" / "portal.nii.gz").unlink()  # missing file
    a = nib.load(str(img / "P003" / "arterial.nii"))  # NaN voxels
    d = np.asanyarray(a.dataobj).astype(np.float32)
    d[3, 3, 3], d[4, 4, 4] = np.nan, np.inf
    nib.save(nib.Nifti1Image(d, a.affine), str(img / "P003" / "arterial.nii"))
    m = nib.load(str(img / "P004" / "mask.nii.gz"))  # empty mask
    nib.save(nib.Nifti1Image(np.zeros(m.shape, np.uint8), m.affine), str(img / "P004" / "mask.nii.gz"))
    files = sorted((img / "P006" / "portal").glob("*.dcm"),
                   key=lambda f: float(pydicom.dcmread(str(f)).ImagePositionPatient[2]))
    files[len(files) // 2].unlink()  # a missing slice in the middle of the stack
    f = sorted((img / "P007" / "arterial").glob("*.dcm"))[0]
    (f.parent / "zz_copy.dcm").write_bytes(f.read_bytes())  # a duplicated slice
    f = sorted((img / "P008" / "arterial").glob("*.dcm"))[1]
    ds = pydicom.dcmread(str(f))
    del ds.PixelData  # DICOM without pixel data
    ds.save_as(str(f))
    return {"P000": "corrupt_file", "P001": "mask_mismatch", "P002": "missing_file", "P003": "non_finite",
            "P004": "empty_mask", "P006": "missing_slice", "P007": "duplicate_slice", "P008": "no_pixel_data"}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root, _ = image_cohort(tmp_path_factory.mktemp("broken") / "c", per_center=3, seed=5)
    return root, _corrupt(root)


def test_each_corruption_gives_its_named_error(broken, tmp_path):
    root, expected = broken
    rep = ingest_cohort(root, tmp_path, IngestConfig(workers=2, processes=False))
    errs = pq.read_table(tmp_path / "ingest" / "errors.parquet").to_pylist()
    manifest = (root / "manifest.csv").read_text().splitlines()[1:]
    got = {}
    for e in errs:
        got.setdefault(e["patient_id"], set()).add(e["code"])
        line = manifest[e["row"] - 1].split(",")
        assert line[0] == e["patient_id"] and line[1] == e["phase"]  # the row named is the bad row
        assert e["file"] in (line[2], line[3]) and e["reason"]
    assert got == {k: {v} for k, v in expected.items()}
    assert rep.ok == 1 and rep.failed == 8
    stored = sorted(p.name for p in (tmp_path / "volumes.zarr").iterdir() if p.is_dir())
    assert stored == ["P005"]  # no partial output for any broken patient
    g = zarr.open_group(tmp_path / "volumes.zarr" / "P005", mode="r")
    assert sorted(g.array_keys()) == ["arterial", "mask", "portal"] and g["mask"][...].any()
    assert pq.read_table(tmp_path / "ingest" / "studies.parquet").column("patient_id").to_pylist() == ["P005"] * 2
    assert not any((tmp_path / "ingest" / ".tmp").glob("*"))


def test_strict_fails_the_run(broken, tmp_path, capsys):
    code = cli_main(["ingest", str(broken[0]), "--store", str(tmp_path), "--workers", "1", "--threads", "--strict"])
    err = capsys.readouterr().err
    assert code == 2 and "--strict" in err and "missing_slice" in err
    assert json.loads((tmp_path / "ingest" / "run.json").read_text())["failed"] == 8


def _snapshot(store: Path) -> dict[str, object]:
    """Every array's bytes and every attribute of the volume store, plus the studies table."""
    snap = {}
    grp = zarr.open_group(store / "volumes.zarr", mode="r")
    for pid in sorted(grp.group_keys()):
        g = grp[pid]
        snap[pid] = dict(g.attrs)
        for name in sorted(g.array_keys()):
            snap[f"{pid}/{name}"] = (g[name][...].tobytes(), str(g[name].dtype), dict(g[name].attrs))
    snap["studies"] = pq.read_table(store / "ingest" / "studies.parquet").to_pylist()
    snap["stats"] = pq.read_table(store / "ingest" / "intensity_stats.parquet").to_pylist()
    return snap


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_uninterrupted(tmp_path):
    root, _ = image_cohort(tmp_path / "c", per_center=5, seed=7)
    cmd = [sys.executable, "-m", "dltr", "ingest", str(root), "--workers", "1", "--threads"]
    ref = tmp_path / "ref"
    subprocess.run(cmd + ["--store", str(ref)], check=True, cwd=REPO, capture_output=True, timeout=300)
    store = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--store", str(store)], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n_at_kill, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 240:
        vz = store / "volumes.zarr"
        n_at_kill = sum(1 for p in vz.iterdir() if p.is_dir()) if vz.is_dir() else 0
        if n_at_kill >= 3:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: the CLI and its Dask threads
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and 3 <= n_at_kill < 15
    assert not (store / "ingest" / "studies.parquet").exists()
    for p in (q for q in (store / "volumes.zarr").iterdir() if q.is_dir()):  # what is visible is complete
        assert (p / "mask" / "zarr.json").exists() and (p / "portal" / "zarr.json").exists()
    done = subprocess.run(cmd + ["--store", str(store), "--json"], check=True, cwd=REPO, capture_output=True,
                          timeout=300)
    summary = json.loads(done.stdout)
    assert summary["skipped"] >= n_at_kill - 1 and summary["ok"] + summary["skipped"] == 15
    assert _snapshot(store) == _snapshot(ref)
    assert sorted(p.name for p in (store / "volumes.zarr").iterdir()) == sorted(
        p.name for p in (ref / "volumes.zarr").iterdir())
    assert not any((store / "ingest" / ".tmp").glob("*"))
