"""One reader interface: ``ImageReader.read(path) -> Volume`` (voxels + RAS affine + meta).

The base class owns the checks every format shares (the file exists, any decoding failure becomes
a named, one-line ``CorruptFileError``, declared sizes are refused before allocating: above
``max_voxels`` / ``max_bytes``, or larger than the file can hold); each format fills ``_read``.
``read_image`` picks the reader from the path.
"""

from __future__ import annotations

import functools
import gzip
import struct
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from ._errors import CorruptFileError, IngestReadError, MissingFileError, TooLargeError, UnsupportedImageError
from ._volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MAX_VOXELS = 1024**3  # refuse declared sizes above this before allocating (4 GiB of float32)
MAX_BYTES = 2**31  # refuse declared voxel data above 2 GiB before allocating (a 1024^3 int16 volume)
_GZ_CHUNK = 1 << 24  # decompress .nii.gz in 16 MiB steps: memory follows the data actually present


def one_line(text: str) -> str:
    """Collapse every run of whitespace (newlines from nibabel/pydicom messages included) to one space."""
    return " ".join(str(text).split())


@functools.cache
def _decode_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'these bytes do not decode', from Python, NumPy and the format libraries."""
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError, ImageDataError
    from nrrd import NRRDError

    return (OSError, EOFError, zlib.error, struct.error, ValueError, ArithmeticError, LookupError, TypeError,
            AttributeError, RuntimeError, HeaderDataError, ImageFileError, ImageDataError, NRRDError)


class ImageReader:
    """Base reader: ``read`` checks, calls ``_read`` and names decoding failures."""

    name: ClassVar[str] = "base"

    def __init__(self, *, max_voxels: int = MAX_VOXELS, max_bytes: int = MAX_BYTES):
        self.max_voxels = max_voxels
        self.max_bytes = max_bytes

    def read(self, path: str | Path) -> Volume:
        path = Path(path)
        if not path.exists():
            raise MissingFileError(f"{path}: file not found; fix the manifest path or restore the file")
        try:
            vol = self._read(path)
        except IngestReadError as e:
            if "\n" in str(e) or "\r" in str(e):
                raise type(e)(one_line(str(e))) from None
            raise
        except MemoryError:
            raise TooLargeError(f"{path}: not enough memory to decode as {self.name}; "
                                "lower the resolution or raise the limits") from None
        except _decode_errors() as e:
            raise CorruptFileError(one_line(f"{path}: cannot decode as {self.name} ({type(e).__name__}: {e}); "
                                            "re-export the file")) from None
        aff = np.asarray(vol.affine, dtype=np.float64)
        if aff.shape != (4, 4) or not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise CorruptFileError(f"{path}: the {self.name} header gives no usable voxel-to-world matrix "
                                   "(non-finite or singular affine: check pixdim / spacing and orientation); "
                                   "re-export the file")
        return Volume(vol.voxels, vol.affine, {"reader": self.name, **vol.meta})

    def _read(self, path: Path) -> Volume:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_size(self, path: Path, shape: tuple[int, ...], itemsize: int | None = None) -> int:
        """Refuse an empty or too large declared shape; return the declared voxel bytes (Python ints)."""
        dims = tuple(int(s) for s in shape)
        n = 1
        for s in dims:
            n *= max(s, 0)
        if any(s < 1 for s in dims) or n > self.max_voxels:
            raise TooLargeError(f"{path}: declared shape {dims} is empty or above {self.max_voxels} voxels; "
                                "refusing to allocate")
        nbytes = n * int(itemsize or 1)
        if itemsize is not None and nbytes > self.max_bytes:
            raise TooLargeError(f"{path}: declared shape {dims} needs {nbytes} bytes, above the limit of "
                                f"{self.max_bytes}; refusing to allocate")
        return nbytes

    @staticmethod
    def _check_holds(path: Path, need: int, have: int) -> None:
        if have < need:
            raise CorruptFileError(f"{path}: header declares {need} bytes of voxel data but the file holds "
                                   f"{max(have, 0)}; the file is truncated or its header is damaged")


def _squeeze3(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    extra = [int(s) for s in shape[3:]]
    if len(shape) < 3 or any(s != 1 for s in extra):
        raise UnsupportedImageError(f"{path}: image shape {tuple(shape)} is not a 3-D volume; "
                                    "split 4-D series into one file per phase")
    return tuple(int(s) for s in shape[:3])


def _gunzip_bounded(path: Path, total: int) -> bytearray:
    """The first ``total`` decompressed bytes of a gzip file, grown as data arrives (never ``total`` up front).

    The rest of the stream is then decompressed and dropped (at most ``max(total, 16 MiB)`` bytes) so
    that gzip checks its CRC and length trailer: a file cut after the voxels is refused as well.
    """
    buf = bytearray()
    with gzip.open(path, "rb") as f:
        while len(buf) < total:
            chunk = f.read(min(_GZ_CHUNK, total - len(buf)))
            if not chunk:
                return buf
            buf += chunk
        extra, allowed = 0, max(total, _GZ_CHUNK)
        while chunk := f.read(_GZ_CHUNK):
            extra += len(chunk)
            if extra > allowed:
                raise CorruptFileError(f"{path}: decompresses to more than {total + allowed} bytes, far more than "
                                       f"its header declares ({total}); re-export the file")
    return buf


def _check_vox_offset(path: Path, hdr) -> None:
    """A single-file NIfTI keeps its voxels after the header: vox_offset must be finite and at least 352
    (544 for NIfTI-2). nibabel lets 0 through as 'unset'; the standard does not."""
    lowest = getattr(hdr, "single_vox_offset", None)
    if lowest is None or hdr["magic"].item() != getattr(hdr, "single_magic", None):
        return
    off = float(hdr["vox_offset"])
    if not np.isfinite(off) or off < lowest:
        raise CorruptFileError(f"{path}: NIfTI vox_offset {off:g} is not a position after the header "
                               f"(at least {lowest}); re-export the file")


class NiftiReader(ImageReader):
    """``.nii`` / ``.nii.gz`` via nibabel: sform or qform (nibabel's choice), scl_slope/inter applied.

    The declared voxel bytes are checked against the file (its size for ``.nii``; a bounded, chunked
    decompression for ``.nii.gz``) before any array of that size exists.
    """

    name = "nifti"

    def _read(self, path: Path) -> Volume:
        import nibabel as nib

        img = nib.load(str(path))
        shape = _squeeze3(path, img.shape)
        proxy = img.dataobj
        dtype = np.dtype(proxy.dtype)
        need = self._check_size(path, shape, dtype.itemsize)
        with nib.openers.ImageOpener(str(path)) as f:  # the header as stored (img.header has vox_offset reset)
            _check_vox_offset(path, img.header_class.from_fileobj(f, check=False))
        offset = int(proxy.offset)
        if path.name.lower().endswith(".gz"):
            buf = _gunzip_bounded(path, offset + need)
            self._check_holds(path, need, len(buf) - offset)
            raw = np.ndarray(shape, dtype=dtype, buffer=buf, offset=offset, order="F")
        else:
            self._check_holds(path, need, path.stat().st_size - offset)
            raw = np.asanyarray(proxy.get_unscaled()).reshape(shape)
        slope, inter = proxy.slope, proxy.inter
        slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
        inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
        data = raw if (slope, inter) == (1.0, 0.0) else raw * np.float64(slope) + np.float64(inter)
        if slope == int(slope) and inter == int(inter) and raw.dtype.kind in "iu" and (slope, inter) != (1.0, 0.0):
            data = np.rint(data).astype(np.int64)
        return Volume(data, np.asarray(img.affine, dtype=np.float64), {"scl": [slope, inter]})


def _nrrd_itemsize(header: dict) -> int | None:
    """Bytes per voxel of a NRRD header (pynrrd's own type table), or None when it cannot tell."""
    import nrrd

    find = getattr(getattr(nrrd, "reader", None), "_determine_datatype", None)
    try:
        return int(find(header).itemsize) if find is not None else None
    except (KeyError, TypeError, ValueError, nrrd.NRRDError):
        return None


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
        itemsize = _nrrd_itemsize(header)
        need = self._check_size(path, shape, itemsize)
        if str(header.get("encoding", "")).lower() == "raw" and "data file" not in header \
                and "datafile" not in header:
            self._check_holds(path, need, path.stat().st_size)  # a lower bound: the header is in there too
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
