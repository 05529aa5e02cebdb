"""What an uploaded file is: FITS (validated by reading its header with astropy) or a picture."""

from __future__ import annotations

import gzip
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caesar_rest.errors import Unsupported

FITS_EXTENSIONS = (".fits.gz", ".fit.gz", ".fts.gz", ".fits", ".fit", ".fts")
IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif"}

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
}


class FormatError(Unsupported):
    """The file is not an image the service accepts."""


@dataclass
class FileFormat:
    """What a file was found to be."""

    kind: str  # fits, png, jpeg, gif
    ext: str  # extension to store the file under, without the dot: fits, fits.gz, png, ...
    info: dict[str, Any] = field(default_factory=dict)


def name_extension(name: str) -> str:
    """The (possibly double) extension of ``name``, lower-cased, with its dot; '' if none."""
    low = name.lower()
    for ext in FITS_EXTENSIONS:
        if low.endswith(ext):
            return ext
    dot = low.rfind(".")
    return low[dot:] if dot > 0 else ""


def _fits_info(path: Path) -> dict[str, Any]:
    """Read the header(s) of a FITS file; raise FormatError when it holds no image."""
    from astropy.io import fits  # slow import: only when a FITS file is checked

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = _first_image(fits, path)
    except FormatError:
        raise
    except (OSError, ValueError, TypeError, EOFError, gzip.BadGzipFile) as exc:
        raise FormatError(f"not a readable FITS file: {exc}") from None
    for w in caught:
        if "truncated" in str(w.message):
            raise FormatError(f"the FITS file is truncated: {w.message}")
    return info


def _first_image(fits: Any, path: Path) -> dict[str, Any]:
    """Header facts of the first 2-D image HDU."""
    with fits.open(path, memmap=True, lazy_load_hdus=False) as hdul:
        for idx, hdu in enumerate(hdul):
            hdr = hdu.header
            naxis = int(hdr.get("NAXIS", 0))
            if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
                continue
            shape = [int(hdr.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
            big = [n for n in shape if n > 1]
            if naxis >= 2 and len(big) >= 2:
                if len(big) > 2:
                    raise FormatError(
                        f"HDU {idx} is a cube with {len(big)} non-degenerate axes "
                        f"{shape}; a 2-D image (extra axes of length 1) is expected"
                    )
                return {
                    "hdu": idx,
                    "shape": shape,
                    "bitpix": int(hdr.get("BITPIX", 0)),
                    "bunit": str(hdr.get("BUNIT", "")),
                    "beam": [hdr.get("BMAJ"), hdr.get("BMIN"), hdr.get("BPA")],
                    "ctype": [str(hdr.get(f"CTYPE{i}", "")) for i in range(1, 3)],
                }
    raise FormatError("the FITS file holds no 2-D image (no HDU with two axes longer than 1)")


def sniff(path: Path, client_name: str) -> FileFormat:
    """Decide what ``path`` is from its content (and the client's name for pictures).

    Raises
    ------
    FormatError
        With a message that says why the file is refused.
    """
    with open(path, "rb") as fh:
        head = fh.read(80)
    if not head:
        raise FormatError("the file is empty")
    gz = head[:2] == b"\x1f\x8b"
    if gz:
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(80)
        except (OSError, EOFError) as exc:
            raise FormatError(f"a gzip file that cannot be read: {exc}") from None
    else:
        inner = head
    if inner.startswith(b"SIMPLE  =") and inner[29:30] == b"T":
        info = _fits_info(path)
        return FileFormat("fits", "fits.gz" if gz else "fits", info)
    if gz:
        raise FormatError("a gzip file that does not hold a FITS image")
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            ext = name_extension(client_name)
            stored = ext[1:] if IMAGE_EXTENSIONS.get(ext) == kind else kind.replace("jpeg", "jpg")
            return FileFormat(kind, stored, {})
    ext = name_extension(client_name)
    if ext in FITS_EXTENSIONS:
        raise FormatError(
            "the name says FITS but the content does not start with a FITS header "
            "('SIMPLE  =                    T')"
        )
    raise FormatError(
        "not an image: accepted are FITS (.fits, .fit, .fts, optionally .gz) and PNG/JPEG/GIF "
        "pictures, recognised by their content"
    )
