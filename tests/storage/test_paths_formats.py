"""Safe paths, owner folders, file names and content sniffing."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from caesar_rest.storage.formats import FormatError, name_extension, sniff
from caesar_rest.storage.paths import (
    is_file_id,
    is_job_id,
    new_id,
    owner_dirname,
    safe_join,
    sanitize_filename,
)


def test_ids() -> None:
    assert is_file_id(new_id())
    for bad in ("../etc", "A" * 32, "0" * 31, "0" * 32 + "/", ""):
        assert not is_file_id(bad)
    assert is_job_id("0" * 32) and is_job_id("12345678-1234-1234-1234-123456789abc")


def test_owner_dirs_distinct_and_safe() -> None:
    a, b = owner_dirname("a.b@c.d"), owner_dirname("a_b@c_d")
    assert a != b
    for name in ("../../root", "x/y", "`rm -rf`", "$(id)", ".hidden", ""):
        d = owner_dirname(name)
        assert "/" not in d and not d.startswith(".") and d
    assert owner_dirname("anonymous") == "anonymous"


def test_sanitize_filename() -> None:
    assert sanitize_filename("../../etc/passwd") == "passwd"
    assert sanitize_filename("C:\\x\\img one.fits") == "img_one.fits"
    assert sanitize_filename("データ.fits") == "データ.fits"
    assert sanitize_filename("...") == "upload"
    assert len(sanitize_filename("a" * 500 + ".fits")) <= 200
    assert sanitize_filename("a" * 500 + ".fits").endswith(".fits")


def test_safe_join(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/b") == tmp_path.resolve() / "a" / "b"
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(ValueError):
            safe_join(tmp_path, bad)


def write_fits(path: Path, shape: tuple[int, ...], gz: bool = False) -> Path:
    hdu = fits.PrimaryHDU(np.zeros(shape, dtype=np.float32))
    hdu.header["BUNIT"] = "JY/BEAM"
    if gz:
        with gzip.open(path, "wb") as fh:
            hdu.writeto(fh)
    else:
        hdu.writeto(path)
    return path


def test_sniff_fits_variants(tmp_path: Path) -> None:
    f = sniff(write_fits(tmp_path / "a.fits", (20, 30)), "a.fits")
    assert (f.kind, f.ext, f.info["shape"]) == ("fits", "fits", [30, 20])
    f = sniff(write_fits(tmp_path / "b.fits.gz", (10, 10), gz=True), "b.fits.gz")
    assert (f.kind, f.ext) == ("fits", "fits.gz")
    f = sniff(write_fits(tmp_path / "c.fts", (1, 1, 16, 16)), "c.fts")
    assert f.info["shape"] == [16, 16, 1, 1]
    with pytest.raises(FormatError, match="non-degenerate"):
        sniff(write_fits(tmp_path / "cube.fits", (3, 16, 16)), "cube.fits")
    with pytest.raises(FormatError, match="no 2-D image"):
        sniff(write_fits(tmp_path / "line.fits", (16,)), "line.fits")


def test_sniff_refusals(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"hello")
    with pytest.raises(FormatError, match="not an image"):
        sniff(p, "x.txt")
    with pytest.raises(FormatError, match="name says FITS"):
        sniff(p, "x.fits")
    p.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        sniff(p, "x.fits")
    g = tmp_path / "g.gz"
    with gzip.open(g, "wb") as fh:
        fh.write(b"not fits at all")
    with pytest.raises(FormatError, match="gzip"):
        sniff(g, "g.fits.gz")
    t = tmp_path / "trunc.fits"
    data = write_fits(tmp_path / "full.fits", (64, 64)).read_bytes()
    t.write_bytes(data[: 2880 + 100])
    with pytest.raises(FormatError):
        sniff(t, "trunc.fits")


def test_sniff_pictures(tmp_path: Path) -> None:
    p = tmp_path / "p"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    assert sniff(p, "pic.png").kind == "png"
    p.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 10)
    f = sniff(p, "pic.jpeg")
    assert (f.kind, f.ext) == ("jpeg", "jpeg")
    assert name_extension("A.FITS.GZ") == ".fits.gz" and name_extension("noext") == ""
