"""Cross-match two shared-schema catalogues and report how they agree.

Sources are matched one-to-one by sky position within a radius (closest pairs first): by default
the beam FWHM when it is known, else 1.5 times the larger of the two catalogues' median ``maj``
(the fitted or measured FWHM, close to the beam for compact sources). The report gives the
matches, the sources found by only one side, the ratio of integrated and peak fluxes (B over A;
median and robust scatter, 1.4826 x the median absolute deviation) and the position offsets of
B relative to A in arcsec. :func:`plot_comparison` draws the same in a PNG.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.table import Table
from scipy.spatial import cKDTree

from caesar_rest.catalogue.schema import COLUMN_NAMES
from caesar_rest.catalogue.writers import make_table, read_catalogue_csv
from caesar_rest.imaging.fits_image import sky_offsets_arcsec

#: Gaussian sigma per median absolute deviation.
MAD_TO_SIGMA = 1.4826
#: Default radius factor on the larger median ``maj`` when no beam is given.
MAJ_RADIUS_FACTOR = 1.5

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def read_catalogue(path: str | Path) -> Table:
    """Read a catalogue written by an app: ``.csv``, ``.vot``/``.xml`` (VOTable) or ``.json``.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    astropy.table.Table
        A shared-schema table (:func:`~caesar_rest.catalogue.writers.make_table`).

    Raises
    ------
    ValueError
        When the file is not a shared-schema catalogue (missing columns, unknown format).
    OSError
        When the file cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_catalogue_csv(path)
    if suffix in (".vot", ".xml", ".votable"):
        raw = Table.read(path, format="votable")
        missing = [n for n in ("ra", "dec") if n not in raw.colnames]
        if missing:
            raise ValueError(f"{path}: missing catalogue column(s): {', '.join(missing)}")
        return make_table(
            {n: raw[n] for n in raw.colnames if n in COLUMN_NAMES} if len(raw) else None
        )
    if suffix == ".json":
        doc = json.loads(path.read_text(encoding="utf-8"))
        rows = doc.get("sources") if isinstance(doc, dict) else None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: not a catalogue JSON document (no 'sources' list)")
        if not rows:
            return make_table(None)
        return make_table([{k: v for k, v in r.items() if k in COLUMN_NAMES} for r in rows])
    raise ValueError(f"{path}: unknown catalogue format {suffix!r} (use .csv, .vot or .json)")


def _unit_vectors(ra: FloatArray, dec: FloatArray) -> FloatArray:
    r, d = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])


def cross_match(
    ra_a: npt.ArrayLike,
    dec_a: npt.ArrayLike,
    ra_b: npt.ArrayLike,
    dec_b: npt.ArrayLike,
    radius_arcsec: float,
) -> tuple[IntArray, IntArray, FloatArray]:
    """One-to-one positional matches within ``radius_arcsec``, closest pairs first.

    Parameters
    ----------
    ra_a, dec_a, ra_b, dec_b
        Positions in degrees; non-finite ones never match.
    radius_arcsec
        Match radius.

    Returns
    -------
    index_a, index_b, separation
        Matched row indices and their separations in arcsec, sorted by index in A.
    """
    ra1, de1 = np.asarray(ra_a, dtype=np.float64), np.asarray(dec_a, dtype=np.float64)
    ra2, de2 = np.asarray(ra_b, dtype=np.float64), np.asarray(dec_b, dtype=np.float64)
    ok1 = np.flatnonzero(np.isfinite(ra1) & np.isfinite(de1))
    ok2 = np.flatnonzero(np.isfinite(ra2) & np.isfinite(de2))
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if ok1.size == 0 or ok2.size == 0 or not radius_arcsec > 0:
        return empty
    v1 = _unit_vectors(ra1[ok1], de1[ok1])
    v2 = _unit_vectors(ra2[ok2], de2[ok2])
    chord = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
    pairs = cKDTree(v1).sparse_distance_matrix(cKDTree(v2), chord, output_type="ndarray")
    if len(pairs) == 0:
        return empty
    i, j, d = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
    order = np.argsort(d, kind="stable")
    used_a: set[int] = set()
    used_b: set[int] = set()
    keep: list[int] = []
    for k in order.tolist():  # greedy: the closest remaining pair wins
        if i[k] in used_a or j[k] in used_b:
            continue
        used_a.add(int(i[k]))
        used_b.add(int(j[k]))
        keep.append(k)
    sel = np.asarray(keep, dtype=np.int64)
    ia, ib = ok1[i[sel]], ok2[j[sel]]
    sep = np.degrees(2.0 * np.arcsin(np.clip(d[sel] / 2.0, 0.0, 1.0))) * 3600.0
    order_a = np.argsort(ia, kind="stable")
    return ia[order_a].astype(np.int64), ib[order_a].astype(np.int64), sep[order_a]


def default_radius(a: Table, b: Table, beam_arcsec: float | None = None) -> tuple[float, str]:
    """The default match radius and the rule that gave it.

    Parameters
    ----------
    a, b
        The catalogues.
    beam_arcsec
        Beam major axis FWHM when known (e.g. from the image header).

    Returns
    -------
    radius, rule
        In arcsec, and a short description.

    Raises
    ------
    ValueError
        When there is no beam and neither catalogue has a finite ``maj``.
    """
    if beam_arcsec is not None and math.isfinite(beam_arcsec) and beam_arcsec > 0:
        return float(beam_arcsec), "beam FWHM"
    medians = []
    for t in (a, b):
        maj = np.asarray(t["maj"], dtype=np.float64)
        maj = maj[np.isfinite(maj) & (maj > 0)]
        if maj.size:
            medians.append(float(np.median(maj)))
    if not medians:
        raise ValueError("no beam and no source sizes to derive a match radius from; give one")
    return MAJ_RADIUS_FACTOR * max(medians), f"{MAJ_RADIUS_FACTOR:g} x the larger median maj"


def robust_stats(values: npt.ArrayLike) -> dict[str, float | int | None]:
    """Median and robust scatter (1.4826 x MAD) of the finite values.

    Parameters
    ----------
    values
        Numbers (NaN and infinities are ignored).

    Returns
    -------
    dict
        ``{"n", "median", "robust_scatter"}``; None for statistics of no values.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "median": None, "robust_scatter": None}
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med)))
    return {"n": int(v.size), "median": med, "robust_scatter": MAD_TO_SIGMA * mad}


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    r[~((num > 0) & (den > 0))] = np.nan  # ratios of non-positive fluxes mean nothing
    return r


@dataclass
class Comparison:
    """The outcome of :func:`compare_catalogues`.

    Attributes
    ----------
    radius_arcsec, radius_rule
        Match radius and how it was chosen.
    n_a, n_b
        Catalogue sizes.
    index_a, index_b, separation_arcsec, east_arcsec, north_arcsec
        One entry per match: rows in A and B, separation and offset of B from A.
    flux_ratio, peak_ratio
        Per match, B over A (NaN where a flux is not positive).
    labels
        Names of the two catalogues in reports and plots.
    """

    radius_arcsec: float
    radius_rule: str
    n_a: int
    n_b: int
    index_a: IntArray
    index_b: IntArray
    separation_arcsec: FloatArray
    east_arcsec: FloatArray
    north_arcsec: FloatArray
    flux_ratio: FloatArray
    peak_ratio: FloatArray
    labels: tuple[str, str] = ("A", "B")
    unmatched_a: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    unmatched_b: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def n_matched(self) -> int:
        """Number of matched pairs."""
        return int(self.index_a.size)

    def to_dict(self, a: Table | None = None, b: Table | None = None) -> dict[str, Any]:
        """The JSON report.

        Parameters
        ----------
        a, b
            The catalogues, to name the unmatched sources (omitted when None).

        Returns
        -------
        dict
            Counts, fractions, flux-ratio and offset statistics.
        """
        la, lb = self.labels
        sep = robust_stats(self.separation_arcsec)
        out: dict[str, Any] = {
            "catalogue_a": la,
            "catalogue_b": lb,
            "radius_arcsec": self.radius_arcsec,
            "radius_rule": self.radius_rule,
            "n_a": self.n_a,
            "n_b": self.n_b,
            "n_matched": self.n_matched,
            "n_unmatched_a": int(self.unmatched_a.size),
            "n_unmatched_b": int(self.unmatched_b.size),
            "matched_fraction_a": self.n_matched / self.n_a if self.n_a else None,
            "matched_fraction_b": self.n_matched / self.n_b if self.n_b else None,
            "flux_ratio_b_over_a": robust_stats(self.flux_ratio),
            "peak_ratio_b_over_a": robust_stats(self.peak_ratio),
            "offset_arcsec": {
                "median_separation": sep["median"],
                "max_separation": float(self.separation_arcsec.max()) if self.n_matched else None,
                "median_east": robust_stats(self.east_arcsec)["median"],
                "median_north": robust_stats(self.north_arcsec)["median"],
                "robust_scatter_east": robust_stats(self.east_arcsec)["robust_scatter"],
                "robust_scatter_north": robust_stats(self.north_arcsec)["robust_scatter"],
            },
        }
        if a is not None:
            out["unmatched_a"] = [str(a["name"][i]) for i in self.unmatched_a.tolist()]
        if b is not None:
            out["unmatched_b"] = [str(b["name"][i]) for i in self.unmatched_b.tolist()]
        return out


def compare_catalogues(
    a: Table,
    b: Table,
    radius_arcsec: float | None = None,
    beam_arcsec: float | None = None,
    labels: tuple[str, str] = ("A", "B"),
) -> Comparison:
    """Cross-match ``b`` against ``a`` and measure flux ratios and position offsets.

    Parameters
    ----------
    a, b
        Shared-schema catalogues (``ra``, ``dec``, ``flux``, ``peak_flux``, ``maj`` are used).
    radius_arcsec
        Match radius; by default see :func:`default_radius`.
    beam_arcsec
        Beam FWHM, used for the default radius.
    labels
        Names of the catalogues.

    Returns
    -------
    Comparison
        Matches and statistics.
    """
    if radius_arcsec is None:
        radius, rule = default_radius(a, b, beam_arcsec)
    else:
        if not (math.isfinite(radius_arcsec) and radius_arcsec > 0):
            raise ValueError(f"the match radius must be positive, got {radius_arcsec}")
        radius, rule = float(radius_arcsec), "given"
    ra_a, de_a = (np.asarray(a[c], dtype=np.float64) for c in ("ra", "dec"))
    ra_b, de_b = (np.asarray(b[c], dtype=np.float64) for c in ("ra", "dec"))
    ia, ib, sep = cross_match(ra_a, de_a, ra_b, de_b, radius)
    east, north = sky_offsets_arcsec(ra_a[ia], de_a[ia], ra_b[ib], de_b[ib])
    flux_a, flux_b = (np.asarray(t["flux"], dtype=np.float64) for t in (a, b))
    peak_a, peak_b = (np.asarray(t["peak_flux"], dtype=np.float64) for t in (a, b))
    return Comparison(
        radius_arcsec=radius,
        radius_rule=rule,
        n_a=len(a),
        n_b=len(b),
        index_a=ia,
        index_b=ib,
        separation_arcsec=sep,
        east_arcsec=east,
        north_arcsec=north,
        flux_ratio=_ratio(flux_b[ib], flux_a[ia]),
        peak_ratio=_ratio(peak_b[ib], peak_a[ia]),
        labels=labels,
        unmatched_a=np.setdiff1d(np.arange(len(a), dtype=np.int64), ia),
        unmatched_b=np.setdiff1d(np.arange(len(b), dtype=np.int64), ib),
    )


def format_report(report: dict[str, Any]) -> str:
    """A few lines of text for a report from :meth:`Comparison.to_dict`.

    Parameters
    ----------
    report
        The report.

    Returns
    -------
    str
        Human-readable summary.
    """

    def num(value: Any, fmt: str = ".3f") -> str:
        return "n/a" if value is None else format(value, fmt)

    la, lb = report["catalogue_a"], report["catalogue_b"]
    fa, fb = report["matched_fraction_a"], report["matched_fraction_b"]
    flux, peak, off = (
        report["flux_ratio_b_over_a"],
        report["peak_ratio_b_over_a"],
        report["offset_arcsec"],
    )
    return "\n".join(
        [
            f"A: {la} ({report['n_a']} sources)",
            f"B: {lb} ({report['n_b']} sources)",
            f"match radius: {report['radius_arcsec']:.3g} arcsec ({report['radius_rule']})",
            f"matched: {report['n_matched']} ({num(fa and 100 * fa, '.1f')}% of A, "
            f"{num(fb and 100 * fb, '.1f')}% of B)",
            f"only in A: {report['n_unmatched_a']}; only in B: {report['n_unmatched_b']}",
            f"flux ratio B/A: median {num(flux['median'])}, robust scatter "
            f"{num(flux['robust_scatter'])} ({flux['n']} pairs)",
            f"peak ratio B/A: median {num(peak['median'])}, robust scatter "
            f"{num(peak['robust_scatter'])} ({peak['n']} pairs)",
            f"offsets B-A: median separation {num(off['median_separation'])} arcsec, median "
            f"east {num(off['median_east'])} arcsec, north {num(off['median_north'])} arcsec",
        ]
    )


def plot_comparison(a: Table, b: Table, comparison: Comparison, path: str | Path) -> Path:
    """Draw the comparison: sky positions, flux B vs A, and position offsets.

    Parameters
    ----------
    a, b
        The catalogues compared.
    comparison
        The result of :func:`compare_catalogues` on them.
    path
        Output PNG (overwritten).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    path.write_bytes(comparison_png(a, b, comparison))
    return path


def comparison_png(a: Table, b: Table, comparison: Comparison) -> bytes:
    """The PNG drawn by :func:`plot_comparison`, as bytes.

    Parameters
    ----------
    a, b
        The catalogues compared.
    comparison
        The result of :func:`compare_catalogues` on them.

    Returns
    -------
    bytes
        A PNG image.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    ia, ib = comparison.index_a, comparison.index_b
    fig = Figure(figsize=(15.0, 5.4), dpi=100)
    FigureCanvasAgg(fig)
    ax_sky, ax_flux, ax_off = fig.subplots(1, 3)
    # Axes say A and B; the title says which catalogue each is (names can be long paths).
    fig.suptitle(f"A: {comparison.labels[0]}    B: {comparison.labels[1]}", fontsize=10)
    la, lb = "A", "B"

    ra_a, de_a = np.asarray(a["ra"], np.float64), np.asarray(a["dec"], np.float64)
    ra_b, de_b = np.asarray(b["ra"], np.float64), np.asarray(b["dec"], np.float64)
    ua, ub = comparison.unmatched_a, comparison.unmatched_b
    ax_sky.scatter(ra_a[ia], de_a[ia], s=14, c="tab:green", label=f"matched ({ia.size})")
    ax_sky.scatter(
        ra_a[ua], de_a[ua], s=14, marker="x", c="tab:blue", label=f"only {la} ({ua.size})"
    )
    ax_sky.scatter(
        ra_b[ub], de_b[ub], s=14, marker="+", c="tab:red", label=f"only {lb} ({ub.size})"
    )
    ax_sky.invert_xaxis()  # RA grows to the east, to the left on the sky
    ax_sky.set_xlabel("RA (deg)")
    ax_sky.set_ylabel("Dec (deg)")
    ax_sky.set_title("Positions")
    ax_sky.legend(fontsize=8, loc="best")

    fa = np.asarray(a["flux"], np.float64)[ia]
    fb = np.asarray(b["flux"], np.float64)[ib]
    ok = (fa > 0) & (fb > 0)
    if ok.any():
        ax_flux.scatter(fa[ok], fb[ok], s=12, c="tab:green")
        lo, hi = float(min(fa[ok].min(), fb[ok].min())), float(max(fa[ok].max(), fb[ok].max()))
        ax_flux.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", label="1:1")
        ax_flux.set_xscale("log")
        ax_flux.set_yscale("log")
        ax_flux.legend(fontsize=8, loc="upper left")
    med = robust_stats(comparison.flux_ratio)["median"]
    ax_flux.set_xlabel(f"flux {la} (Jy)")
    ax_flux.set_ylabel(f"flux {lb} (Jy)")
    ax_flux.set_title(
        "Integrated flux" + ("" if med is None else f" (median {lb}/{la} = {med:.3f})")
    )

    ax_off.scatter(comparison.east_arcsec, comparison.north_arcsec, s=12, c="tab:green")
    r = comparison.radius_arcsec
    ax_off.add_patch(Circle((0.0, 0.0), r, fill=False, ls="--", color="0.4"))
    ax_off.axhline(0.0, color="0.8", lw=0.8)
    ax_off.axvline(0.0, color="0.8", lw=0.8)
    ax_off.set_xlim(r * 1.1, -r * 1.1)  # east to the left, as on the sky
    ax_off.set_ylim(-r * 1.1, r * 1.1)
    ax_off.set_aspect("equal")
    ax_off.set_xlabel(f"offset east, {lb} - {la} (arcsec)")
    ax_off.set_ylabel(f"offset north, {lb} - {la} (arcsec)")
    ax_off.set_title(f'Offsets ({comparison.n_matched} matches within {r:.3g}")')
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def run_compare_command(
    path_a: str, path_b: str, radius: float | None, plot: str | None, as_json: bool
) -> int:
    """``caesar-rest compare``: read two catalogues, compare them and print the report.

    Parameters
    ----------
    path_a, path_b
        The catalogue files.
    radius
        Match radius in arcsec, or None for the default.
    plot
        PNG file to write, or None.
    as_json
        Print JSON instead of text.

    Returns
    -------
    int
        0 on success, 2 when a catalogue cannot be read or the radius is bad.
    """
    import sys

    try:
        a, b = read_catalogue(path_a), read_catalogue(path_b)
        result = compare_catalogues(a, b, radius, labels=(path_a, path_b))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = result.to_dict(a, b)
    if plot:
        report["plot"] = str(plot_comparison(a, b, result, plot))
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    return 0
