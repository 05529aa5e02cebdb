"""Catalogues: components and islands in the shared schema, CAESAR-style tables (spec 7).

* Component catalogue (the main catalogue of the ``caesar`` app): one row per fitted Gaussian
  component, plus one moment-based row per island without a converged fit of the whole island
  (extended islands, too large to fit, failed fits, or fitting off). Columns: the shared schema
  (:mod:`caesar_rest.catalogue.schema`) plus CAESAR extras (island/nested/component names,
  deconvolved sizes, chi2, ndf, fit quality, morphology).
* Island catalogue: one row per island in the shared schema (flux = fitted total when the
  island was fitted as a whole, else the background-subtracted pixel sum; position = the
  flux-weighted centroid, size = the moment ellipse) plus :data:`ISLAND_COLUMNS` (name,
  segmentation label, pixels, area, beams, morphology, nested sources). Row ``k`` is island
  ``S<k>``, label ``k + 1`` of the segmentation map and polygon ``k`` of ``islands.reg``.
* ``.dat`` tables with the columns of spec 7.1 (islands, each followed by its nested sources)
  and 7.2 (components), tab-separated, ``#`` header, -999 for missing values.

Islands are named ``S<n>`` in the order of their peak pixel (row, then column), which does not
depend on tiling; nested sources ``<island>_N<j>``; components ``<source>_fitcomp<k>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import astropy.units as u
import numpy as np
import numpy.typing as npt
from astropy.table import Table

from caesar_rest.catalogue.schema import (
    FLAG_BLENDED,
    FLAG_EXTENDED,
    FLAG_FIT_FAILED,
    FLAG_TRUNCATED,
)
from caesar_rest.catalogue.writers import compact_json, iau_names, make_table, write_json_rows
from caesar_rest.imaging.fits_image import pixel_ellipse_to_sky, pixel_to_radec, sky_jacobian
from caesar_rest.sourcefinder._types import F64, FWHM
from caesar_rest.sourcefinder.fitting import QUALITY_NAMES
from caesar_rest.sourcefinder.islands import (
    MORPH_COMPACT_EXTENDED,
    MORPH_EXTENDED,
    MORPH_NAMES,
    IslandSet,
    island_order,
)

if TYPE_CHECKING:  # the catalogues need no finder code at run time
    from caesar_rest.sourcefinder.pipeline import SourceFinderResult

MISSING = -999.0

#: Extra columns of the component catalogue: name, dtype, unit, description.
EXTRA_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("island_name", "U32", "", "CAESAR island name (S<n>)"),
    ("source_name", "U48", "", "Fitted source: the island or one of its nested sources"),
    (
        "component_name",
        "U64",
        "",
        "CAESAR component name (<source>_fitcomp<k>), empty if not fitted",
    ),
    ("fitted", "bool", "", "Row comes from a Gaussian fit (else from island moments)"),
    ("maj_deconv", "f8", "arcsec", "Deconvolved major axis FWHM (0 = unresolved)"),
    ("min_deconv", "f8", "arcsec", "Deconvolved minor axis FWHM"),
    ("pa_deconv", "f8", "deg", "Deconvolved position angle, east of north"),
    ("chi2", "f8", "", "Fit chi2"),
    ("ndf", "i8", "", "Fit degrees of freedom"),
    ("fit_quality", "U8", "", "Fit quality (HIGH, MEDIUM, LOW, BAD)"),
    ("morph", "U16", "", "Morphology of the island or nested source"),
    ("resolved", "bool", "", "S_int/S_peak > 1.08 + 2.03/SNR"),
    ("npix", "i8", "", "Pixels of the island or nested source"),
)


#: Extra columns of the island catalogue (one row per island; an extended source is one
#: island): name, dtype, unit, description. ``label`` is the island's value in the
#: segmentation map (``segmented.fits``) and its polygon is line ``label`` of ``islands.reg``.
ISLAND_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("island_name", "U32", "", "CAESAR island name (S<n>)"),
    ("label", "i8", "", "Label of the island in the segmentation map (island_id + 1)"),
    ("npix", "i8", "", "Pixels of the island's mask"),
    ("area", "f8", "arcsec2", "Area of the island's mask"),
    ("nbeams", "f8", "", "Area of the island's mask in beams"),
    ("morph", "U16", "", "Morphology of the island"),
    ("n_nested", "i8", "", "Nested (compact) sources found inside the island"),
)


def deconvolve(
    maj: F64, mnr: F64, pa: F64, bmaj: float, bmin: float, bpa: float
) -> tuple[F64, F64, F64]:
    """Wild (1970) deconvolution of Gaussian FWHM ellipses by the beam (spec 6.6, corrected).

    Parameters
    ----------
    maj, mnr, pa
        Fitted FWHM axes and position angle (degrees).
    bmaj, bmin, bpa
        Beam FWHM axes and position angle (same units).

    Returns
    -------
    maj_d, min_d, pa_d
        Deconvolved sizes (0 when unresolved) and angle (degrees, [0, 180)).
    """
    phi = np.radians(pa)
    phib = math.radians(bpa)
    s = maj**2 + mnr**2
    d = maj**2 - mnr**2
    sb = bmaj**2 + bmin**2
    db = bmaj**2 - bmin**2
    beta = np.sqrt(np.clip(d**2 + db**2 - 2 * d * db * np.cos(2 * (phi - phib)), 0.0, None))
    a2 = 0.5 * (s - sb + beta)
    b2 = 0.5 * (s - sb - beta)
    ok = s > sb
    amaj = np.where(ok, np.sqrt(np.clip(a2, 0.0, None)), 0.0)
    amin = np.where(ok, np.sqrt(np.clip(b2, 0.0, None)), 0.0)
    ang = 0.5 * np.arctan2(
        d * np.sin(2 * phi) - db * math.sin(2 * phib), d * np.cos(2 * phi) - db * math.cos(2 * phib)
    )
    pa_d = np.where(ok, np.mod(np.degrees(ang), 180.0), 0.0)
    return amaj, amin, pa_d


@dataclass
class Catalogues:
    """The catalogues of one run.

    ``components.json`` is kept as its metadata and the component table's columns at build
    time (:attr:`json_table`, sharing the columns of :attr:`components`, so the columns added
    later by the classifier are not in it): :meth:`write_components_json` formats it a chunk
    of rows at a time instead of holding one Python object per cell from the build to the write.
    """

    components: Table
    islands: Table
    island_names: list[str]
    islands_dat: str
    components_dat: str
    json_meta: dict[str, Any]
    json_table: Table

    @property
    def components_json(self) -> dict[str, Any]:
        """The whole ``components.json`` document (see :func:`components_json`)."""
        return _json_document(self.json_meta, self.json_table)

    def write_components_json(self, path: Path) -> Path:
        """Write ``components.json`` (the bytes of :func:`write_components_json` of
        :attr:`components_json`), formatting :data:`JSON_CHUNK` rows at a time.

        Parameters
        ----------
        path
            Output file.

        Returns
        -------
        pathlib.Path
            The file.
        """
        table = self.json_table

        def rows(a: int, b: int) -> list[dict[str, Any]]:
            return _json_rows(table[a:b])

        head = {"metadata": self.json_meta, "columns": _json_columns(table)}
        return write_json_rows(path, head, "components", len(table), rows, JSON_CHUNK)


#: Rows of ``components.json`` formatted at a time.
JSON_CHUNK = 2048


def _sky(result: SourceFinderResult, x: F64, y: F64, a: F64, b: F64, th: F64) -> tuple[F64, ...]:
    wcs = result.image.wcs
    ox, oy = result.image.origin
    lx, ly = x - ox, y - oy
    ra, dec = pixel_to_radec(wcs, lx, ly)
    if x.size == 0:
        e = np.zeros(0)
        return ra, dec, e, e, e, np.zeros((0, 2, 2))
    jac = sky_jacobian(wcs, lx, ly)
    maj, mnr, pa = pixel_ellipse_to_sky(jac, a, b, th)
    return ra, dec, maj, mnr, pa, jac


def build(result: SourceFinderResult) -> Catalogues:
    """Build every catalogue of a :class:`~caesar_rest.sourcefinder.pipeline.SourceFinderResult`.

    Parameters
    ----------
    result
        The run.

    Returns
    -------
    Catalogues
        Tables and the text of the ``.dat`` files.
    """
    src = result.sources
    s = src.isl
    is_isl = s.parent < 0
    # Tiling-independent order (by peak row, then column), shared with the segmentation map.
    isl_idx = island_order(s)
    rank = np.full(s.n, -1, dtype=np.int64)
    rank[isl_idx] = np.arange(isl_idx.size)
    names = np.array([f"S{i}" for i in range(isl_idx.size)], dtype=object)
    src_name = np.empty(s.n, dtype=object)
    src_name[isl_idx] = names
    mother = np.where(is_isl, np.arange(s.n), s.parent)
    nest_idx = np.flatnonzero(~is_isl)
    nest_idx = nest_idx[np.lexsort((s.xpk[nest_idx], s.ypk[nest_idx], rank[mother[nest_idx]]))]
    counter: dict[int, int] = {}
    for j in nest_idx:
        m = int(s.parent[j])
        counter[m] = counter.get(m, 0) + 1
        src_name[j] = f"{src_name[m]}_N{counter[m]}"

    # Per-source fit status.
    fit = src.fit
    whole_ok = np.zeros(s.n, dtype=bool)
    tried = np.zeros(s.n, dtype=bool)
    if fit is not None:
        tried[src.unit_source] = True
        whole_ok[src.unit_source[fit.fitted]] = True
    isl_fitted_whole = whole_ok & is_isl
    # Moment rows: islands without a converged whole fit.
    mom = isl_idx[~isl_fitted_whole[isl_idx]]
    rows = _moment_rows(result, mom, tried[mom])
    if fit is not None and fit.params.shape[0]:
        rows_fit = _fit_rows(result, src_name)
        rows = {k: np.concatenate([rows[k], rows_fit[k]]) for k in rows}
    # Island ids and component numbering.
    isl_of_row = rows.pop("_mother")
    island_id = rank[isl_of_row]
    order = np.lexsort((-rows["peak_flux"], ~rows["fitted"].astype(bool), island_id))
    rows = {k: v[order] for k, v in rows.items()}
    island_id = island_id[order]
    isl_of_row = isl_of_row[order]
    first = np.searchsorted(island_id, island_id, side="left")
    comp_id = np.arange(island_id.size) - first
    nrows_isl = np.bincount(island_id, minlength=isl_idx.size)
    flags = rows["flags"]
    flags |= np.where(nrows_isl[island_id] > 1, FLAG_BLENDED, 0)
    flags |= np.where(s.border[isl_of_row], FLAG_TRUNCATED, 0)
    rows["flags"] = flags
    shared = {k: rows[k] for k in rows if k in _SHARED}
    shared["name"] = iau_names(rows["ra"], rows["dec"])
    shared["island_id"] = island_id
    shared["component_id"] = comp_id
    comps = make_table(shared)
    for name, dtype, unit, desc in EXTRA_COLUMNS:
        if name == "island_name":
            vals: Any = [str(src_name[int(m)]) for m in isl_of_row]
        else:
            vals = rows[name]
        comps[name] = np.asarray(vals, dtype=dtype)
        comps[name].unit = u.Unit(unit) if unit else None
        comps[name].description = desc
    islands_tab = _island_table(result, isl_idx, whole_ok, fit, src)
    isl_names = [str(n) for n in names]
    return Catalogues(
        components=comps,
        islands=islands_tab,
        island_names=isl_names,
        islands_dat=islands_dat(result, isl_idx, nest_idx, src_name),
        components_dat=components_dat(comps),
        json_meta=_json_meta(result),
        json_table=Table(comps, copy=False),
    )


_SHARED = {
    "x",
    "y",
    "x_err",
    "y_err",
    "ra",
    "dec",
    "ra_err",
    "dec_err",
    "peak_flux",
    "peak_flux_err",
    "flux",
    "flux_err",
    "maj",
    "maj_err",
    "min",
    "min_err",
    "pa",
    "pa_err",
    "local_rms",
    "local_bkg",
    "snr",
    "flags",
}


def _moment_rows(
    result: SourceFinderResult, idx: npt.NDArray[np.int64], tried: npt.NDArray[np.bool_]
) -> Any:
    s = result.sources.isl
    area = result.beam.area_pix
    n = idx.size
    smaj, smin, th = _moments(s, idx)
    ra, dec, maj, mnr, pa, _ = _sky(result, s.xw[idx], s.yw[idx], FWHM * smaj, FWHM * smin, th)
    pk = _peak_pixel_values(s, idx)
    peak = pk[0] - pk[1]
    rms = pk[2]
    flags = np.zeros(n, dtype=np.int64)
    ext = np.isin(s.morph[idx], (MORPH_EXTENDED, MORPH_COMPACT_EXTENDED))
    flags[ext] |= FLAG_EXTENDED
    flags[tried] |= FLAG_FIT_FAILED
    nan = np.full(n, np.nan)
    flux = s.sum_sub[idx] / area
    # Pixel sum of correlated noise: variance ~ rms^2 * npix * min(npix, beam area).
    flux_err = (
        (s.rms_sum[idx] / s.npix[idx]) * np.sqrt(s.npix[idx] * np.minimum(s.npix[idx], area)) / area
    )
    return {
        "_mother": idx,
        "x": s.xw[idx].astype(float),
        "y": s.yw[idx].astype(float),
        "x_err": nan,
        "y_err": nan,
        "ra": ra,
        "dec": dec,
        "ra_err": nan,
        "dec_err": nan,
        "peak_flux": peak,
        "peak_flux_err": rms,
        "flux": flux,
        "flux_err": flux_err,
        "maj": maj,
        "maj_err": nan,
        "min": mnr,
        "min_err": nan,
        "pa": pa,
        "pa_err": nan,
        "local_rms": rms,
        "local_bkg": pk[1],
        "snr": peak / rms,
        "flags": flags,
        "source_name": np.array([""] * n, dtype=object),
        "component_name": np.array([""] * n, dtype=object),
        "fitted": np.zeros(n, dtype=bool),
        "maj_deconv": nan,
        "min_deconv": nan,
        "pa_deconv": nan,
        "chi2": nan,
        "ndf": np.zeros(n, dtype=np.int64),
        "fit_quality": np.array([""] * n, dtype=object),
        "morph": np.array([MORPH_NAMES[int(m)] for m in s.morph[idx]], dtype=object),
        "resolved": ext,
        "npix": s.npix[idx],
    }


def _moments(s: IslandSet, idx: npt.NDArray[np.int64]) -> tuple[F64, F64, F64]:
    from caesar_rest.sourcefinder.islands import moment_ellipse

    return moment_ellipse(s.cxx[idx], s.cyy[idx], s.cxy[idx])


def _peak_pixel_values(s: IslandSet, idx: npt.NDArray[np.int64]) -> tuple[F64, F64, F64]:
    # Flux, background and rms at the peak pixel of each source.
    out = np.zeros((3, idx.size))
    for j, i in enumerate(idx):
        sl = s.pixels(int(i))
        k = int(np.argmax(s.flux[sl]))
        out[:, j] = s.flux[sl][k], s.bkg[sl][k], s.rms[sl][k]
    return out[0], out[1], out[2]


def _fit_rows(result: SourceFinderResult, src_name: npt.NDArray[Any]) -> Any:
    src = result.sources
    s = src.isl
    fit = src.fit
    assert fit is not None  # called for runs with fits only
    beam = result.beam
    p = fit.params
    e = fit.errors
    n = p.shape[0]
    source = src.unit_source[fit.unit]
    mother = np.where(s.parent[source] >= 0, s.parent[source], source)
    a, x, y, sx, sy, th = (p[:, k] for k in range(6))
    ra, dec, maj, mnr, pa, jac = _sky(result, x, y, FWHM * sx, FWHM * sy, th)
    # Errors: pixel covariance of the centre through the local Jacobian (arcsec).
    cov = np.zeros((n, 2, 2))
    cov[:, 0, 0] = e[:, 1] ** 2
    cov[:, 1, 1] = e[:, 2] ** 2
    scov = jac @ cov @ np.transpose(jac, (0, 2, 1))
    pixscale = np.sqrt(np.abs(np.linalg.det(jac)))
    major_is_x = sx >= sy
    maj_err = FWHM * np.where(major_is_x, e[:, 3], e[:, 4]) * pixscale
    min_err = FWHM * np.where(major_is_x, e[:, 4], e[:, 3]) * pixscale
    noise = fit.noise[fit.unit]
    bkg = s.bkg_sum[source] / s.npix[source] + fit.offset[fit.unit]
    md, nd, pd = deconvolve(maj, mnr, pa, beam.bmaj, beam.bmin, beam.bpa)
    snr = a / noise
    resolved = fit.flux / np.maximum(a, 1e-300) > 1.08 + 2.03 / np.maximum(snr, 1e-9)
    flags = np.where(resolved, FLAG_EXTENDED, 0).astype(np.int64)
    flags |= np.where(
        np.isin(s.morph[mother], (MORPH_EXTENDED, MORPH_COMPACT_EXTENDED)), FLAG_EXTENDED, 0
    )
    names = np.array(
        [
            f"{src_name[int(sc)]}_fitcomp{int(c) + 1}"
            for sc, c in zip(source, fit.comp, strict=True)
        ],
        dtype=object,
    )
    quality = fit.quality[fit.unit]
    return {
        "_mother": mother,
        "x": x,
        "y": y,
        "x_err": e[:, 1],
        "y_err": e[:, 2],
        "ra": ra,
        "dec": dec,
        "ra_err": np.sqrt(scov[:, 0, 0]),
        "dec_err": np.sqrt(scov[:, 1, 1]),
        "peak_flux": a,
        "peak_flux_err": e[:, 0],
        "flux": fit.flux,
        "flux_err": fit.flux_err,
        "maj": maj,
        "maj_err": maj_err,
        "min": mnr,
        "min_err": min_err,
        "pa": pa,
        "pa_err": np.degrees(e[:, 5]),
        "local_rms": noise,
        "local_bkg": bkg,
        "snr": snr,
        "flags": flags,
        "source_name": np.array([str(src_name[int(sc)]) for sc in source], dtype=object),
        "component_name": names,
        "fitted": np.ones(n, dtype=bool),
        "maj_deconv": md,
        "min_deconv": nd,
        "pa_deconv": pd,
        "chi2": fit.chi2[fit.unit],
        "ndf": fit.ndf[fit.unit],
        "fit_quality": np.array([QUALITY_NAMES[int(q)] for q in quality], dtype=object),
        "morph": np.array([MORPH_NAMES[int(m)] for m in s.morph[source]], dtype=object),
        "resolved": resolved,
        "npix": s.npix[source],
    }


def _island_table(
    result: SourceFinderResult, isl_idx: Any, whole_ok: Any, fit: Any, src: Any
) -> Table:
    s = src.isl
    area = result.beam.area_pix
    rows = _moment_rows(result, isl_idx, np.zeros(isl_idx.size, dtype=bool))
    flux = rows["flux"].copy()
    flux_err = rows["flux_err"].copy()
    if fit is not None and src.unit_source.size:
        unit_of = np.full(s.n, -1, dtype=np.int64)
        unit_of[src.unit_source] = np.arange(src.unit_source.size)
        uu = unit_of[isl_idx]
        ok = (uu >= 0) & whole_ok[isl_idx]
        flux[ok] = fit.flux_total[uu[ok]]
        flux_err[ok] = fit.flux_total_err[uu[ok]]
    cols = {k: rows[k] for k in rows if k in _SHARED}
    cols["flux"] = flux
    cols["flux_err"] = flux_err
    cols["flags"] = rows["flags"] | np.where(s.border[isl_idx], FLAG_TRUNCATED, 0)
    cols["name"] = iau_names(rows["ra"], rows["dec"])
    cols["island_id"] = np.arange(isl_idx.size)
    cols["component_id"] = np.zeros(isl_idx.size, dtype=np.int64)
    table = make_table(cols)
    pix_area = result.image.pixel_scale_arcsec**2
    nnest = np.bincount(s.parent[s.parent >= 0], minlength=s.n) if s.n else np.zeros(0, int)
    extra = {
        "island_name": [f"S{k}" for k in range(isl_idx.size)],
        "label": np.arange(1, isl_idx.size + 1),
        "npix": s.npix[isl_idx],
        "area": s.npix[isl_idx] * pix_area,
        "nbeams": s.npix[isl_idx] / area,
        "morph": rows["morph"],
        "n_nested": nnest[isl_idx],
    }
    for name, dtype, unit, desc in ISLAND_COLUMNS:
        table[name] = np.asarray(extra[name], dtype=dtype)
        table[name].unit = u.Unit(unit) if unit else None
        table[name].description = desc
    return table


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool | np.bool_):
        return str(int(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    f = float(v)
    if not math.isfinite(f):
        return "-999"
    return f"{f:.6g}"


def islands_dat(
    result: SourceFinderResult,
    isl_idx: npt.NDArray[np.int64],
    nest_idx: npt.NDArray[np.int64],
    names: Any,
) -> str:
    """Island table of spec 7.1 (each island followed by its nested sources).

    Parameters
    ----------
    result
        The run.
    isl_idx, nest_idx
        Islands and nested sources in output order.
    names
        Source names.

    Returns
    -------
    str
        The file text.
    """
    s = result.sources.isl
    fit = result.sources.fit
    area = result.beam.area_pix
    cols = [
        "name",
        "iauName",
        "npix",
        "nComponents",
        "nNestedSources",
        "x",
        "y",
        "x_w",
        "y_w",
        "x_wcs",
        "y_wcs",
        "x_w_wcs",
        "y_w_wcs",
        "xmin",
        "xmax",
        "ymin",
        "ymax",
        "xmin_wcs",
        "xmax_wcs",
        "ymin_wcs",
        "ymax_wcs",
        "nu",
        "Stot",
        "Smax",
        "S",
        "Serr",
        "beamArea",
        "bkgSum",
        "rmsSum",
        "morphId",
        "sourcenessId",
        "isGoodSource",
        "sourceNestedLevel",
    ]
    order: list[int] = []
    kids: dict[int, list[int]] = {}
    for j in nest_idx:
        kids.setdefault(int(s.parent[j]), []).append(int(j))
    for i in isl_idx:
        order.append(int(i))
        order.extend(kids.get(int(i), []))
    idx = np.array(order, dtype=np.int64)
    if idx.size == 0:
        return "# " + "\t".join(cols) + "\n"
    ncomp = np.zeros(s.n, dtype=np.int64)
    sfit = np.zeros(s.n)
    serr = np.zeros(s.n)
    if fit is not None:
        us = result.sources.unit_source
        ncomp[us] = fit.ncomp
        sfit[us] = np.nan_to_num(fit.flux_total)
        serr[us] = np.nan_to_num(fit.flux_total_err)
    nnest = np.bincount(s.parent[s.parent >= 0], minlength=s.n) if s.n else np.zeros(0)
    ra0, dec0, *_ = _sky(
        result, s.x0[idx], s.y0[idx], np.ones(idx.size), np.ones(idx.size), np.zeros(idx.size)
    )
    raw, decw, *_ = _sky(
        result, s.xw[idx], s.yw[idx], np.ones(idx.size), np.ones(idx.size), np.zeros(idx.size)
    )
    ox, oy = result.image.origin
    wcs = result.image.wcs
    ramin, decmin = pixel_to_radec(wcs, s.xmin[idx] - ox, s.ymin[idx] - oy)
    ramax, decmax = pixel_to_radec(wcs, s.xmax[idx] - ox, s.ymax[idx] - oy)
    iau = iau_names(ra0, dec0, unique=False)
    nu = _frequency_ghz(result)
    lines = [
        "# CAESAR-style island catalogue (caesar-rest); pixel coordinates 0-based",
        "# " + "\t".join(cols),
    ]
    for k, i in enumerate(idx):
        level = 0 if s.parent[i] < 0 else 1
        vals = [
            names[i],
            iau[k],
            s.npix[i],
            ncomp[i],
            nnest[i],
            s.x0[i],
            s.y0[i],
            s.xw[i],
            s.yw[i],
            ra0[k],
            dec0[k],
            raw[k],
            decw[k],
            s.xmin[i],
            s.xmax[i],
            s.ymin[i],
            s.ymax[i],
            ramin[k],
            ramax[k],
            decmin[k],
            decmax[k],
            nu,
            s.sum[i],
            s.smax[i],
            sfit[i],
            serr[i],
            area,
            s.bkg_sum[i],
            s.rms_sum[i],
            s.morph[i],
            2,
            bool(s.good[i]),
            level,
        ]
        lines.append("\t".join(_fmt(v) for v in vals))
    return "\n".join(lines) + "\n"


def _frequency_ghz(result: SourceFinderResult) -> float:
    h = result.image.header
    for i in range(3, 5):
        if str(h.get(f"CTYPE{i}", "")).upper().startswith("FREQ"):
            try:
                return float(h[f"CRVAL{i}"]) / 1e9
            except (KeyError, ValueError, TypeError):
                return MISSING
    for key in ("RESTFRQ", "FREQ", "RESTFREQ"):
        if key in h:
            try:
                return float(h[key]) / 1e9
            except (ValueError, TypeError):
                pass
    return MISSING


def components_dat(comps: Table) -> str:
    """Component table of spec 7.2 (fitted components only).

    Parameters
    ----------
    comps
        Component catalogue from :func:`build`.

    Returns
    -------
    str
        The file text.
    """
    cols = [
        "name",
        "npix",
        "componentId",
        "iauName",
        "x",
        "y",
        "x_err",
        "y_err",
        "x_wcs",
        "y_wcs",
        "x_wcs_err",
        "y_wcs_err",
        "Speak",
        "Speak_err",
        "S",
        "S_err",
        "bmaj_wcs",
        "bmin_wcs",
        "pa_wcs",
        "bmaj_wcs_err",
        "bmin_wcs_err",
        "pa_wcs_err",
        "bmaj_deconv_wcs",
        "bmin_deconv_wcs",
        "pa_deconv_wcs",
        "chi2",
        "ndf",
        "fitQuality",
        "morph",
        "resolved",
    ]
    lines = [
        "# CAESAR-style component catalogue (caesar-rest); pixel coordinates 0-based, "
        "fluxes in Jy/beam (Speak) and Jy (S), sizes FWHM in arcsec, angles east of north",
        "# " + "\t".join(cols),
    ]
    fitted = np.asarray(comps["fitted"], dtype=bool) if len(comps) else np.zeros(0, bool)
    for r in comps[fitted]:
        k = str(r["component_name"]).rsplit("_fitcomp", 1)[-1]
        vals = [
            r["source_name"],
            r["npix"],
            k,
            r["name"],
            r["x"],
            r["y"],
            r["x_err"],
            r["y_err"],
            r["ra"],
            r["dec"],
            r["ra_err"] / 3600.0,
            r["dec_err"] / 3600.0,
            r["peak_flux"],
            r["peak_flux_err"],
            r["flux"],
            r["flux_err"],
            r["maj"],
            r["min"],
            r["pa"],
            r["maj_err"],
            r["min_err"],
            r["pa_err"],
            r["maj_deconv"],
            r["min_deconv"],
            r["pa_deconv"],
            r["chi2"],
            r["ndf"],
            r["fit_quality"],
            r["morph"],
            bool(r["resolved"]),
        ]
        lines.append("\t".join(_fmt(v) for v in vals))
    return "\n".join(lines) + "\n"


def components_json(result: SourceFinderResult, comps: Table) -> dict[str, Any]:
    """Component catalogue as JSON: metadata plus one object per row (all columns).

    Parameters
    ----------
    result
        The run.
    comps
        Component catalogue.

    Returns
    -------
    dict
        ``{"metadata": {...}, "columns": [...], "components": [...]}``.
    """
    return _json_document(_json_meta(result), comps)


def _json_meta(result: SourceFinderResult) -> dict[str, Any]:
    img = result.image
    beam = result.beam
    ny, nx = img.shape
    return {
        "software": "caesar-rest sourcefinder",
        "input": img.path.name,
        "nx": nx,
        "ny": ny,
        "pixel_arcsec": img.pixel_scale_arcsec,
        "bmaj_arcsec": beam.bmaj,
        "bmin_arcsec": beam.bmin,
        "bpa_deg": beam.bpa,
        "beam_area_pix": beam.area_pix,
        "frequency_ghz": _frequency_ghz(result),
        "bunit": img.bunit,
    }


def _json_columns(comps: Table) -> list[dict[str, str]]:
    return [
        {"name": c, "unit": str(comps[c].unit or ""), "description": comps[c].description or ""}
        for c in comps.colnames
    ]


def _json_rows(comps: Table) -> list[dict[str, Any]]:
    """One object per row (NaN as None)."""
    lists = {c: comps[c].tolist() for c in comps.colnames}
    rows = []
    for i in range(len(comps)):
        row = {}
        for c in comps.colnames:
            v = lists[c][i]
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            row[c] = v
        rows.append(row)
    return rows


def _json_document(meta: dict[str, Any], comps: Table) -> dict[str, Any]:
    return {"metadata": meta, "columns": _json_columns(comps), "components": _json_rows(comps)}


def write_components_json(doc: dict[str, Any], path: Path) -> Path:
    """Write :func:`components_json` output (NaN as null).

    Parameters
    ----------
    doc
        The document.
    path
        Output file.

    Returns
    -------
    pathlib.Path
        The file.
    """
    path.write_text(compact_json(doc) + "\n", encoding="utf-8")
    return path
