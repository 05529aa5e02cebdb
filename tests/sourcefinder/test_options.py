"""The option table and the finder's settings: every effective option sets a setting that the
finder (or the ``caesar`` app) reads, and every setting is set by an option."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from caesar_rest.apps.caesar_run import main
from caesar_rest.sourcefinder import find_sources, options
from caesar_rest.sourcefinder.options import (
    ALL_OPTIONS,
    APP,
    GROUPS,
    OFF,
    PART,
    FinderOptions,
    LegacyOption,
    from_legacy,
    setting_names,
)

from tests.sourcefinder.sf_synth import RMS, gaussian, point_sources, write

FINDER_DIR = str(Path(options.__file__).parent)
#: Settings the ``caesar`` app reads (not the finder): tested through the app below.
APP_SETTINGS = {"regions_wcs", "region_frame"}
#: Settings no option sets (library use only).
LIBRARY_ONLY = {"auto_tile_above"}
#: Options a changed value needs to take effect (the sub-image's corners need read-subimg).
NEEDS: dict[str, dict[str, Any]] = {
    k: {"read-subimg": True} for k in ("xmin", "xmax", "ymin", "ymax")
} | {
    "bpa": {"bmaj": 6.0},
    "fitsources": {"no-fitsources": True},
    "bkgskipoutliers": {"no-bkgskipoutliers": True},
}


def _value_at(opts: FinderOptions, target: str) -> Any:
    value: Any = opts
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _changed(o: LegacyOption) -> Any:
    """A valid value of ``o`` other than its default."""
    if o.kind == "flag":
        return True
    if o.kind == "enum":
        assert o.values is not None
        return next(v for v in o.values if v != o.default)
    step = 1 if o.kind == "int" else 0.5 * (abs(o.default) or 1.0)
    up = o.default + step
    value = up if o.max is None or up <= o.max else o.default - step
    return int(value) if o.kind == "int" else float(value)


def test_defaults_are_the_legacy_apps() -> None:
    assert from_legacy({}) == FinderOptions()


def test_every_row_names_a_setting_or_says_it_has_no_effect() -> None:
    settings = set(setting_names())
    targeted = set()
    for o in ALL_OPTIONS:
        if not o.effective:
            assert o.to is None, o.name
            assert o.description.startswith(options._NA), o.name
            continue
        assert o.to is not None, o.name
        if o.to == APP:
            continue
        assert o.to in settings, o.name
        assert (o.how == PART) == (o.to in options._BUILDERS), o.name
        targeted.add(o.to)
    assert settings - targeted == LIBRARY_ONLY
    # The predecessor's ellipse cuts flag components in a column the catalogues do not have.
    assert not options.LEGACY_BY_NAME["fit-useellipsecuts"].effective


@pytest.mark.parametrize(
    "opt", [o for o in ALL_OPTIONS if o.effective and o.to != APP], ids=lambda o: o.name
)
def test_each_effective_option_changes_its_setting(opt: LegacyOption) -> None:
    base = NEEDS.get(opt.name, {})
    before = _value_at(from_legacy(base), str(opt.to))
    after = _value_at(from_legacy({**base, opt.name: _changed(opt)}), str(opt.to))
    assert after != before
    if opt.how == OFF:
        assert after is None


# --------------------------------------------------------------------------------------------
# Every setting has a reader: runs with settings that record which fields the finder reads
# --------------------------------------------------------------------------------------------


def _recording(obj: Any, path: str, seen: set[str]) -> Any:
    """A copy of the dataclass ``obj`` whose field reads from the finder's modules go to
    ``seen`` (reads by the generated dataclass methods do not count)."""
    names = {f.name for f in dataclasses.fields(obj)}

    def get(self: Any, name: str) -> Any:
        if name in names:
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(FINDER_DIR):
                seen.add(f"{path}{name}")
        return object.__getattribute__(self, name)

    cls = type(f"Recording{type(obj).__name__}", (type(obj),), {"__getattribute__": get})
    return cls(**{n: getattr(obj, n) for n in names})


@contextmanager
def _recorded(opts: FinderOptions) -> Iterator[tuple[FinderOptions, set[str]]]:
    seen: set[str] = set()
    groups = {g: _recording(getattr(opts, g), f"{g}.", seen) for g in GROUPS}
    yield _recording(dataclasses.replace(opts, **groups), "", seen), seen


def _field_image(tmp_path: Path) -> Path:
    n = 260
    srcs = [(40.0 + 45.0 * (i % 4), 40.0 + 60.0 * (i // 4), (12.0 + 4 * i) * RMS) for i in range(8)]
    img = point_sources(n, srcs, seed=11)
    # A large island with two peaks (nested search) and a faint extended blob.
    img += gaussian(n, 200.0, 200.0, 30 * RMS, 6.0, 4.0, 0.3)
    img += gaussian(n, 212.0, 204.0, 25 * RMS, 3.0, 3.0, 0.0)
    img += gaussian(n, 90.0, 200.0, 3 * RMS, 20.0, 15.0, 0.5)
    return write(tmp_path / "field.fits", img)


def test_every_setting_is_read_by_the_finder(tmp_path: Path) -> None:
    path = _field_image(tmp_path)
    runs = [
        # Everything on: iterations, outlier masking, selection, nested seeds, box background.
        from_legacy(
            {
                "fitsources": True,
                "selectsources": True,
                "maxnpixcut": True,
                "ellipsearearatiocut": True,
                "compactsearchiters": 2,
                "bkgskipoutliers": True,
                "fit-usenestedascomponents": True,
                "fit-usebkgboxestimate": True,
                "nested-sourcetobeamthr": 1.0,
                "save-fits": True,
            }
        ),
        # The saliency search, kept apart from the compact islands.
        from_legacy({"extsfinder": "SALIENCY-THRESH", "no-mergesources": True}),
        # The active-contour and superpixel searches.
        from_legacy({"extsfinder": "ACTIVE-CONTOUR"}),
        from_legacy({"extsfinder": "SP-HIERCLUST"}),
        # Tiles.
        from_legacy({"tilesplit": True, "tilesize": 130, "tilestep": 0.9, "fitsources": True}),
    ]
    read: set[str] = set()
    for opts in runs:
        with _recorded(opts) as (rec, seen):
            find_sources(path, rec)
        read |= seen
    assert set(setting_names()) - read == APP_SETTINGS


def test_the_app_reads_its_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "in.fits", point_sources(120, [(60.0, 60.0, 40 * RMS)], seed=2))
    argv = ["--input", str(path), "--no-preview", "--convertregionstowcs"]
    assert main([*argv, "--outdir", str(tmp_path / "a"), "--regionwcs=GALACTIC"]) == 0
    assert capsys.readouterr().out.count("found 1 islands") == 1
    assert (tmp_path / "a" / "islands.reg").read_text().splitlines()[2] == "galactic"
    # loglevel: the app's log.
    assert main([*argv, "--outdir", str(tmp_path / "b"), "--loglevel=ERROR"]) == 0
    assert "found" not in capsys.readouterr().out
    assert (tmp_path / "b" / "islands.reg").read_text().splitlines()[2] == "fk5"
