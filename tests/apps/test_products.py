"""Products of an app run: map units and types by kind, the preview title, the VOTable
provenance and coordinate system."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse

from caesar_rest import __version__
from caesar_rest.apps.caesar_run import main as caesar_main
from caesar_rest.apps.products import catalogue_coosys, display_name, input_identity
from caesar_rest.apps.sep_run import main as sep_main
from caesar_rest.catalogue import preview as preview_module
from caesar_rest.imaging import load_image
from caesar_rest.jobs.folder import JobSpec, write_spec

from tests.support.app_jobs import check_provenance, job_log, result_bytes, run_job, service, upload
from tests.support.synth_images import STANDARD_SOURCES, make_header, write_synth


def _infos(path: Path) -> dict[str, str]:
    resource = parse(str(path)).resources[0]
    return {i.name: str(i.value) for i in resource.infos}


def test_caesar_maps_carry_their_own_units(
    synth_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """Intensity maps keep Jy/beam; significance and saliency are dimensionless; the
    segmentation map holds int32 labels without a unit."""
    syn = synth_factory()
    out = tmp_path / "out"
    flags = ["--save-rmsmap", "--save-significancemap", "--save-saliencymap"]
    argv = ["--input", str(syn.path), "--outdir", str(out), "--no-preview", *flags]
    assert caesar_main([*argv, "--save-segmentedmap", "--save-bkgmap"]) == 0
    for name in ("rms.fits", "background.fits"):
        with fits.open(out / name) as hdul:
            assert hdul[0].header["BUNIT"] == "JY/BEAM", name
            assert hdul[0].data.dtype == np.dtype(">f4"), name
    for name in ("significance.fits", "saliency.fits"):
        with fits.open(out / name) as hdul:
            assert hdul[0].header["BUNIT"] == "", name
            assert hdul[0].header["BTYPE"].startswith(name.split(".")[0]), name
            assert hdul[0].data.dtype.kind == "f", name
    with fits.open(out / "segmented.fits") as hdul:
        header, labels = hdul[0].header, hdul[0].data
        assert "BUNIT" not in header and header["BITPIX"] == 32
        assert labels.dtype == np.dtype(">i4")
        summary = json.loads((out / "summary.json").read_text())
        # Every island has its label; outside islands the map is 0.
        assert labels.min() == 0 and 0 < len(np.unique(labels)) - 1 <= summary["n_islands"] + 2


def test_votable_provenance_and_coosys(synth_factory: Callable[..., Any], tmp_path: Path) -> None:
    syn = synth_factory()
    out = tmp_path / "out"
    argv = ["--input", str(syn.path), "--outdir", str(out), "--no-preview", "--seedthr=6"]
    assert sep_main(argv) == 0
    vot = parse(str(out / "catalog.vot"))
    resource = vot.resources[0]
    (coosys,) = resource.coordinate_systems
    assert (coosys.system, coosys.equinox) == ("eq_FK5", "J2000")  # the synthetic image is FK5
    fields = {f.name: f for f in vot.get_first_table().fields}
    assert fields["ra"].ref == coosys.ID and fields["dec"].ref == coosys.ID
    assert fields["x"].ref is None
    infos = _infos(out / "catalog.vot")
    assert infos["app"] == "sep" and infos["caesar_rest_version"] == __version__
    assert infos["input_file"] == syn.path.name
    assert infos["input_sha256"] == hashlib.sha256(syn.path.read_bytes()).hexdigest()
    assert json.loads(infos["options"])["seedthr"] == 6.0
    assert infos["image_frame"] == "fk5"
    params = {p.name: p for p in resource.params}
    assert params["beam_major"].value == pytest.approx(6.0)
    assert str(params["beam_major"].unit) == "arcsec"
    summary = json.loads((out / "summary.json").read_text())
    assert params["rms_median"].value == pytest.approx(summary["rms_median"])


def test_coosys_follows_the_catalogue_coordinates(tmp_path: Path) -> None:
    """FK5 J2000 images keep FK5; ICRS and galactic images give ICRS ra/dec."""
    frames = {}
    for ctype, radesys in (("RA---SIN", "FK5"), ("RA---SIN", "ICRS"), ("GLON-SIN", None)):
        header = make_header(64, 1.5, 0.0)
        if ctype.startswith("GLON"):
            header["CTYPE1"], header["CTYPE2"] = "GLON-SIN", "GLAT-SIN"
            header.remove("RADESYS", ignore_missing=True)
            header.remove("EQUINOX", ignore_missing=True)
        else:
            header["RADESYS"] = radesys
        path = tmp_path / f"{ctype}{radesys}.fits"
        header["BMAJ"] = header["BMIN"] = 6.0 / 3600.0
        fits.PrimaryHDU(np.zeros((64, 64), np.float32), header=header).writeto(path)
        frames[radesys or "galactic"] = catalogue_coosys(load_image(path))
    assert frames == {
        "FK5": ("eq_FK5", "J2000"),
        "ICRS": ("ICRS", None),
        "galactic": ("ICRS", None),
    }


def test_service_job_uses_the_uploaded_name(
    synth_factory: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's job.json names the user's file: the preview is titled with it and the VOTable
    records it with the upload's hash, though the stored file is named by its id."""
    syn = synth_factory()
    stored = tmp_path / "data" / "0123abcd.fits"
    stored.parent.mkdir()
    stored.write_bytes(syn.path.read_bytes())
    job = tmp_path / "job"
    job.mkdir()
    spec = JobSpec("j1", "sep", {}, str(stored), ["x"], "my field\x07.fits", "ab" * 32)
    write_spec(job, spec)
    assert input_identity(stored, job) == ("my field.fits", "ab" * 32)
    titles: list[str | None] = []
    real = preview_module.write_preview

    def spy(*args: Any, **kw: Any) -> Path:
        titles.append(kw.get("name"))
        return real(*args, **kw)

    monkeypatch.setattr(preview_module, "write_preview", spy)
    assert sep_main(["--input", str(stored), "--outdir", str(job)]) == 0
    assert titles == ["my field.fits"]
    infos = _infos(job / "catalog.vot")
    assert infos["input_file"] == "my field.fits" and infos["input_sha256"] == "ab" * 32
    # Another input than the spec's: its own name and hash.
    other = tmp_path / "other.fits"
    write_synth(other, STANDARD_SOURCES[:1])
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    assert input_identity(other, job) == ("other.fits", digest)


def test_preview_title_uses_the_name(synth_factory: Callable[..., Any], tmp_path: Path) -> None:
    image = load_image(synth_factory().path)
    a = preview_module.write_preview(image, None, tmp_path / "a.png", name="field 1.fits")
    b = preview_module.write_preview(image, None, tmp_path / "b.png")
    assert preview_module.png_text(a)["Title"] == "field 1.fits: 0 sources"
    assert preview_module.png_text(b)["Title"] == "synth.fits: 0 sources"


def test_preview_title_is_plain_text(synth_factory: Callable[..., Any], tmp_path: Path) -> None:
    """A "$" in a file name is no mathtext: the preview is drawn (unescaped, this raised)."""
    image = load_image(synth_factory().path)
    path = preview_module.write_preview(image, None, tmp_path / "a.png", name="x$\\frac$y.fits")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_display_name_is_plain_text() -> None:
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("C:\\data\\img.fits") == "img.fits"
    assert display_name("a\nb\x1b[31m.fits") == "ab[31m.fits"
    assert len(display_name("x" * 500)) == 200


def test_service_job_records_the_uploaded_name(
    synth_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """Through the service: job.json carries the upload's name and hash, and so does the
    VOTable (the stored file is named by its id)."""
    syn = synth_factory(name="my_field.fits")
    with service(tmp_path / "svc") as client:
        file_id = upload(client, syn.path)
        job_id, status = run_job(client, file_id, "sep", {"seedthr": 6})
        assert status["state"] == "SUCCESS", job_log(client, job_id)
        vot = tmp_path / "c.vot"
        vot.write_bytes(result_bytes(client, job_id, "catalog"))
        (spec_path,) = (tmp_path / "svc" / "jobs").rglob("job.json")
    check_provenance(vot, syn.path)
    spec = json.loads(spec_path.read_text())
    assert spec["input_name"] == "my_field.fits" and file_id in spec["input_file"]
