"""A small three-center cohort built in code for the ingest tests: center A NIfTI in LPS with masks
in a permuted orientation, center B NIfTI in RAS with LPS masks, center C pydicom-written DICOM
series (shuffled file names and reversed InstanceNumbers) with NRRD masks in LPS. Fake identifiers
are planted in every DICOM header. ``truth`` holds each tumour's world centroid (RAS mm)."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

from dltr.core.layout import StoreLayout

PHASES = ("arterial", "portal")
FAKE = {"name": "Doe^Jane{n}", "id": "MRN-{n}-XQZ", "birth": "19500101", "inst": "Hospital-Of-Nowhere-{n}",
        "acc": "ACC{n}ZZ"}


def _geometry(rng, n):
    shape = (int(rng.integers(30, 40)), int(rng.integers(26, 34)), int(rng.integers(9, 13)))
    spacing = np.array([rng.choice([0.8, 1.1]), rng.choice([0.9, 1.2]), rng.choice([2.5, 3.0])])
    aff = np.diag(list(spacing) + [1.0])
    aff[:3, 3] = [-20.0 - n, 15.0 + n, -40.0 + 2 * n]
    return shape, aff


def _volumes(rng, shape):
    ii = np.indices(shape, dtype=np.float64)
    c = [rng.uniform(6, s - 6) if s > 14 else s / 2 for s in shape]
    r = [rng.uniform(3, 6), rng.uniform(3, 6), rng.uniform(1.5, 2.5)]
    mask = (sum(((ii[a] - c[a]) / r[a]) ** 2 for a in range(3)) <= 1).astype(np.uint8)
    imgs = {}
    for k, ph in enumerate(PHASES):
        body = 100 + 30 * k + 20 * np.sin(ii[0] / 4) + rng.normal(0, 5, shape)
        imgs[ph] = np.round(body + mask * (80 - 20 * k)).astype(np.int16)
        imgs[ph][:2] = 0  # air at one side: "body" excludes it
    return imgs, mask


def _flip(data, aff, axes):
    """Flip array axes ``axes`` and return the matching affine (same world positions)."""
    out, a = data, aff.copy()
    for ax in axes:
        out = np.flip(out, ax)
        n = data.shape[ax]
        a[:3, 3] = a[:3, 3] + a[:3, ax] * (n - 1)
        a[:3, ax] = -a[:3, ax]
    return np.ascontiguousarray(out), a


def _permute(data, aff, perm):
    a = aff.copy()
    a[:3, :3] = aff[:3, :3][:, perm]
    return np.ascontiguousarray(np.transpose(data, perm)), a


def _nifti(path, data, aff):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, aff), str(path))


def write_dicom_series(folder: Path, data_ras, aff_ras, n: int, phase_i: int, rng, slope=1.0, inter=0.0):
    """One DICOM file per slice (LPS, axial), pydicom-written, with fake identifiers."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    lps_data, lps_aff = _flip(data_ras, aff_ras, (0, 1))
    lps_aff = np.diag([-1.0, -1, 1, 1]) @ lps_aff  # now columns are LPS directions
    folder.mkdir(parents=True, exist_ok=True)
    nz = lps_data.shape[2]
    names = rng.permutation(nz)
    series_uid, study_uid = generate_uid(), generate_uid()
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{names[k]:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, study_uid
        ds.PatientName, ds.PatientID = FAKE["name"].format(n=n), FAKE["id"].format(n=n)
        ds.PatientBirthDate, ds.InstitutionName = FAKE["birth"], FAKE["inst"].format(n=n)
        ds.AccessionNumber, ds.ReferringPhysicianName = FAKE["acc"].format(n=n), "Dr^Who"
        ds.StudyDate, ds.Modality, ds.SeriesNumber = "20200102", "MR", phase_i + 1
        ds.InstanceNumber = nz - k  # reversed: sorting must use positions
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(x) for x in lps_aff[:3, 3] + k * lps_aff[:3, 2]]
        ds.PixelSpacing = [float(lps_aff[1, 1]), float(lps_aff[0, 0])]
        ds.SliceThickness = float(lps_aff[2, 2])
        raw = np.round((lps_data[:, :, k].T - inter) / slope).astype(np.int16)
        ds.Rows, ds.Columns = raw.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, inter
        ds.PixelData = raw.tobytes()
        pydicom.dcmwrite(str(folder / f"im{names[k]:03d}.dcm"), ds, enforce_file_format=True)


def _nrrd(path, data_ras, aff_ras):
    import nrrd

    d, a = _flip(data_ras, aff_ras, (0, 1))
    a = np.diag([-1.0, -1, 1, 1]) @ a
    nrrd.write(str(path), d, {"space": "left-posterior-superior", "space directions": a[:3, :3].T.tolist(),
                              "space origin": a[:3, 3].tolist()}, index_order="F")


def image_cohort(root: str | Path, per_center: int = 2, seed: int = 0) -> tuple[Path, dict[str, dict]]:
    """Write the cohort; returns ``(root, truth)`` with truth[pid] = {center, centroid, spacing}."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    manifest, clinical, truth = [], [], {}
    for ci, center in enumerate("ABC"):
        for m in range(per_center):
            n = ci * per_center + m
            pid = f"P{n:03d}"
            shape, aff = _geometry(rng, n)
            imgs, mask = _volumes(rng, shape)
            ijk = np.argwhere(mask > 0).mean(axis=0)
            truth[pid] = {"center": center, "centroid": (aff @ np.r_[ijk, 1])[:3], "spacing": np.diag(aff)[:3]}
            d = root / "images" / pid
            if center == "A":
                mpath = f"images/{pid}/mask.nii.gz"
                _nifti(root / mpath, *_permute(*_flip(mask, aff, (2,)), (1, 0, 2)))
            elif center == "B":
                mpath = f"images/{pid}/mask.nii.gz"
                _nifti(root / mpath, *_flip(mask, aff, (0, 1)))
            else:
                mpath = f"images/{pid}/mask.nrrd"
                d.mkdir(parents=True, exist_ok=True)
                _nrrd(root / mpath, mask, aff)
            for k, ph in enumerate(PHASES):
                if center == "A":
                    rel = f"images/{pid}/{ph}.nii.gz"
                    _nifti(root / rel, *_flip(imgs[ph], aff, (0, 1)))
                elif center == "B":
                    rel = f"images/{pid}/{ph}.nii"
                    _nifti(root / rel, imgs[ph], aff)
                else:
                    rel = f"images/{pid}/{ph}"
                    write_dicom_series(root / rel, imgs[ph], aff, n, k, rng, slope=2.0 if k else 1.0,
                                       inter=-10.0 if k else 0.0)
                manifest.append({"patient_id": pid, "phase": ph, "image": rel, "mask": mpath, "study_date": ""})
            clinical.append({"patient_id": pid, "center": center, "tace_date": "2020-02-01", "response": "PR"})
    _csv(root / "manifest.csv", manifest)
    _csv(root / "clinical.csv", clinical)
    (root / "cohort.toml").write_text('name = "ingest-test"\nphases = ["arterial", "portal"]\n')
    return root, truth


def _csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def nifti_cohort(root: Path, patients: dict[str, tuple[str, np.ndarray, dict[str, np.ndarray]]],
                 affine: np.ndarray, tace_date: str = "2020-01-01") -> Path:
    """A cohort folder of uncompressed NIfTI files from arrays given in code: ``patients[pid] = (center,
    mask, {phase: image})``; one mask per patient, repeated on each of its manifest rows."""
    root = Path(root)
    man, clin = [], []
    for pid, (center, mask, images) in patients.items():
        d = root / "images" / pid
        d.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.asarray(mask, np.uint8), affine), str(d / "mask.nii"))
        for ph, v in images.items():
            nib.save(nib.Nifti1Image(v, affine), str(d / f"{ph}.nii"))
            man.append({"patient_id": pid, "phase": ph, "image": f"images/{pid}/{ph}.nii",
                        "mask": f"images/{pid}/mask.nii"})
        clin.append({"patient_id": pid, "center": center, "tace_date": tace_date})
    _csv(root / "manifest.csv", man)
    _csv(root / "clinical.csv", clin)
    return root


def region_values(store_root: Path, center: str, phase: str, region: str) -> np.ndarray:
    """The independent reference of the ingest statistics: every stored voxel of ``phase`` in ``center``'s
    patients inside the tumour mask (``region == "tumour"``) or non-zero (body), float64, sorted."""
    import zarr

    grp = zarr.open_group(StoreLayout.of(store_root).volumes, mode="r")
    vals = []
    for pid in sorted(grp.group_keys()):
        g = grp[pid]
        if g.attrs["center"] != center:
            continue
        v = g[phase][...].astype(np.float64)
        vals.append(v[g["mask"][...] > 0] if region == "tumour" else v[v > 0])
    return np.sort(np.concatenate(vals))
