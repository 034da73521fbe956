"""One reader interface: ``ImageReader.read(path) -> Volume`` (voxels + RAS affine + meta).

The base class owns the checks every format shares (the file exists, a decoding failure becomes
a named ``CorruptFileError``, declared sizes are refused before allocating); each format fills
``_read``. ``read_image`` picks the reader from the path.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from ._errors import CorruptFileError, IngestReadError, MissingFileError, TooLargeError, UnsupportedImageError
from ._volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MAX_VOXELS = 1024**3  # refuse declared sizes above this before allocating (4 GiB of float32)


class ImageReader:
    """Base reader: ``read`` checks, calls ``_read`` and names decoding failures."""

    name: ClassVar[str] = "base"

    def __init__(self, *, max_voxels: int = MAX_VOXELS):
        self.max_voxels = max_voxels

    def read(self, path: str | Path) -> Volume:
        path = Path(path)
        if not path.exists():
            raise MissingFileError(f"{path}: file not found; fix the manifest path or restore the file")
        try:
            vol = self._read(path)
        except IngestReadError:
            raise
        except (OSError, EOFError, zlib.error, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise CorruptFileError(f"{path}: cannot decode as {self.name} ({type(e).__name__}: {e}); "
                                   "re-export the file") from None
        return Volume(vol.voxels, vol.affine, {"reader": self.name, **vol.meta})

    def _read(self, path: Path) -> Volume:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_size(self, path: Path, shape: tuple[int, ...]) -> None:
        n = int(np.prod([int(s) for s in shape], dtype=np.float64))
        if any(int(s) < 1 for s in shape) or n > self.max_voxels:
            raise TooLargeError(f"{path}: declared shape {tuple(int(s) for s in shape)} is empty or above "
                                f"{self.max_voxels} voxels; refusing to allocate")


def _squeeze3(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    extra = [int(s) for s in shape[3:]]
    if len(shape) < 3 or any(s != 1 for s in extra):
        raise UnsupportedImageError(f"{path}: image shape {tuple(shape)} is not a 3-D volume; "
                                    "split 4-D series into one file per phase")
    return tuple(int(s) for s in shape[:3])


class NiftiReader(ImageReader):
    """``.nii`` / ``.nii.gz`` via nibabel: sform or qform (nibabel's choice), scl_slope/inter applied."""

    name = "nifti"

    def _read(self, path: Path) -> Volume:
        import nibabel as nib

        img = nib.load(str(path))
        shape = _squeeze3(path, img.shape)
        self._check_size(path, shape)
        proxy = img.dataobj
        raw = np.asanyarray(proxy.get_unscaled()).reshape(shape)
        slope, inter = proxy.slope, proxy.inter
        slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
        inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
        data = raw if (slope, inter) == (1.0, 0.0) else raw * np.float64(slope) + np.float64(inter)
        if slope == int(slope) and inter == int(inter) and raw.dtype.kind in "iu" and (slope, inter) != (1.0, 0.0):
            data = np.rint(data).astype(np.int64)
        return Volume(data, np.asarray(img.affine, dtype=np.float64), {"scl": [slope, inter]})


class NrrdReader(ImageReader):
    """``.nrrd`` / ``.nhdr`` via pynrrd: ``space directions`` and ``space origin`` in LPS or RAS."""

    name = "nrrd"
    _SPACES: ClassVar[dict[str, np.ndarray]] = {
        "left-posterior-superior": LPS_TO_RAS, "lps": LPS_TO_RAS,
        "right-anterior-superior": np.eye(4), "ras": np.eye(4),
        "left-anterior-superior": np.diag([-1.0, 1.0, 1.0, 1.0]), "las": np.diag([-1.0, 1.0, 1.0, 1.0]),
    }

    def _read(self, path: Path) -> Volume:
        import nrrd

        header = nrrd.read_header(str(path))
        shape = _squeeze3(path, tuple(header["sizes"]))
        self._check_size(path, shape)
        data, header = nrrd.read(str(path), index_order="F")
        data = np.asarray(data).reshape(shape)
        space = str(header.get("space", "left-posterior-superior")).lower()
        if space not in self._SPACES:
            raise UnsupportedImageError(f"{path}: NRRD space {space!r} is not LPS/RAS/LAS")
        dirs = np.asarray(header["space directions"], dtype=np.float64)[-3:]
        affine = np.eye(4)
        affine[:3, :3] = dirs.T
        affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
        return Volume(data, self._SPACES[space] @ affine, {"scl": [1.0, 0.0]})


def reader_for(path: str | Path) -> ImageReader:
    """The reader for a path: NIfTI and NRRD by suffix, a folder as a DICOM series, else a DICOM file."""
    from ._dicom import DicomMultiframeReader, DicomSeriesReader, is_multiframe

    p = Path(path)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return NiftiReader()
    if name.endswith((".nrrd", ".nhdr")):
        return NrrdReader()
    if p.is_dir() or not p.exists():
        return DicomSeriesReader()
    return DicomMultiframeReader() if is_multiframe(p) else DicomSeriesReader()


def read_image(path: str | Path) -> Volume:
    """Read any supported image (NIfTI, NRRD, DICOM series folder, single or multi-frame DICOM file)."""
    return reader_for(path).read(path)
