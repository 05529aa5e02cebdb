"""The shared app run: products named by the app's ResultSpecs, the caesar app through it, and
a registry that stays light to import."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caesar_rest.apps.base import App, Option, OptionError, ResultSpec
from caesar_rest.apps.caesar_app import CaesarApp
from caesar_rest.apps.caesar_run import main as caesar_main
from caesar_rest.apps.products import Extraction, MapStyle
from caesar_rest.apps.program import Finder, parse_arguments, program_main, run
from caesar_rest.catalogue.writers import make_table, read_catalogue_csv
from caesar_rest.imaging.fits_image import FitsImage


def test_caesar_writes_thumbnail_and_image_frame(
    synth_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """The caesar app writes what docs/apps.md promises of every catalogue app."""
    syn = synth_factory()
    out = tmp_path / "out"
    assert caesar_main(["--input", str(syn.path), "--outdir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image"]["frame"] == "fk5"
    assert summary["files"]["preview-thumb"] == "preview-thumb.png"
    assert (out / "preview-thumb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Every file is a declared result; the island catalogue is written in place (no scratch).
    declared = {r.filename for r in CaesarApp().results}
    assert {p.name for p in out.iterdir()} <= declared
    assert set(summary["files"].values()) <= declared
    islands = read_catalogue_csv(out / "islands.csv")
    assert len(islands) == summary["n_islands"] > 0
    # Nested islands have contours too.
    assert (out / "islands.reg").read_text().count("polygon(") >= summary["n_islands"]


def test_caesar_no_preview(synth_factory: Callable[..., Any], tmp_path: Path) -> None:
    syn = synth_factory()
    out = tmp_path / "out"
    assert caesar_main(["--input", str(syn.path), "--outdir", str(out), "--no-preview"]) == 0
    assert not (out / "preview.png").exists() and not (out / "preview-thumb.png").exists()


@dataclass
class _TinyApp(App):
    """An app declaring few results: only those may be written."""

    name: str = "tiny"
    description: str = "test app"
    options: tuple[Option, ...] = (
        Option("save-bkgmap", "none", default=False),
        Option("level", "float", default=1.0, min=0.0),
    )
    results: tuple[ResultSpec, ...] = field(
        default=(
            ResultSpec("catalog-csv", "sources.csv", "text/csv", required=True),
            ResultSpec("preview", "look.png", "image/png"),
            ResultSpec("background-map", "bkg.fits", "application/fits"),
            ResultSpec("summary", "about.json", "application/json"),
        )
    )


class _TinyFinder(Finder):
    prog = "tiny_run"
    maps = MapStyle("test")

    def extract(self, image: FitsImage, opts: Mapping[str, Any], out_dir: Path) -> Extraction:
        back = np.full(image.shape, float(opts["level"]), dtype=np.float32)
        table = make_table({"name": ["a"], "x": [10.0], "y": [12.0], "ra": [150.0], "dec": [-30.0]})
        return Extraction(table, background=back, rms=back, n_islands=1, counts={"extra": 2})


def test_products_only_under_declared_names(
    synth_factory: Callable[..., Any], tmp_path: Path
) -> None:
    syn = synth_factory(sources=[])
    out = tmp_path / "out"
    summary = run(_TinyApp(), _TinyFinder(), syn.path, out, {"save-bkgmap": True})
    assert sorted(p.name for p in out.iterdir()) == [
        "about.json",
        "bkg.fits",
        "look.png",
        "sources.csv",
    ]
    assert summary["files"] == {
        "catalog-csv": "sources.csv",
        "preview": "look.png",
        "background-map": "bkg.fits",
    }
    written = json.loads((out / "about.json").read_text())
    assert list(written)[:5] == ["app", "input", "n_sources", "extra", "n_islands"]
    assert written["image"]["frame"] == "fk5" and "total" in written["timings_s"]


def test_program_exit_codes(
    synth_factory: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    syn = synth_factory(sources=[])
    base = ["--input", str(syn.path), "--outdir", str(tmp_path / "o")]
    assert program_main(_TinyApp(), _TinyFinder(), [*base, "--level=-1"]) == 2
    assert "level" in capsys.readouterr().err
    assert program_main(_TinyApp(), _TinyFinder(), [*base, "--colour", "red"]) == 2
    assert "unknown option(s) for app 'tiny': colour" in capsys.readouterr().err
    assert program_main(_TinyApp(), _TinyFinder(), ["--outdir", "x"]) == 2
    assert program_main(_TinyApp(), _TinyFinder(), ["--help"]) == 0
    assert "--level=<float>" in capsys.readouterr().out
    assert program_main(_TinyApp(), _TinyFinder(), [*base, "--no-preview", "--level", "2"]) == 0
    assert not (tmp_path / "o" / "look.png").exists()


def test_parse_arguments_values_and_flags() -> None:
    app = _TinyApp()
    argv = ["--input", "in.fits", "--outdir", "out", "--level", "-2.5", "--save-bkgmap=no"]
    assert parse_arguments(app, argv) == (
        Path("in.fits"),
        Path("out"),
        {"level": "-2.5", "save-bkgmap": False},
        False,
    )
    with pytest.raises(OptionError, match="needs a value"):
        parse_arguments(app, ["--input", "a", "--outdir", "b", "--level"])


def test_registry_import_is_light() -> None:
    """Listing the apps imports no science package (the service starts fast)."""
    code = (
        "import sys\n"
        "from caesar_rest.apps.registry import default_registry\n"
        "assert default_registry().names()\n"
        "heavy = {'numpy', 'scipy', 'astropy', 'sep', 'bdsf', 'photutils', 'AegeanTools',"
        " 'matplotlib'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"
