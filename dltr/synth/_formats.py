"""File writers of the synthetic cohort: NIfTI-1 (gzip, deterministic) and NRRD masks."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np

__all__ = ["write_nifti", "write_nrrd_mask"]


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, slope: float = 1.0, inter: float = 0.0) -> None:
    """Write ``data`` as stored (no rescaling by nibabel) with ``scl_slope``/``scl_inter`` in the header.

    The bytes are built from a nibabel header and gzipped with ``mtime=0`` at level 1, so that the same
    array always gives the same file.
    """
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(data.dtype)
    hdr.set_data_shape(data.shape)
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm")
    hdr["scl_slope"] = slope
    hdr["scl_inter"] = inter
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\x00" * 4 + np.asarray(data).tobytes(order="F")
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))


def write_nrrd_mask(path: Path, mask: np.ndarray, affine_ras: np.ndarray) -> None:
    """A label map in NRRD with ``space`` left-posterior-superior and the same world geometry as ``affine_ras``."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    header = {
        "type": "uint8",
        "dimension": 3,
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,  # one row per array axis
        "space origin": lps[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }
    nrrd.write(str(path), np.ascontiguousarray(mask, np.uint8), header, index_order="F")
    raw = path.read_bytes()  # pynrrd stamps the wall-clock time in a comment: drop it (determinism)
    head, sep, body = raw.partition(b"\n\n")
    head = re.sub(rb"\n# on [^\n]*\(GMT\)\.", b"", head)
    path.write_bytes(head + sep + body)
