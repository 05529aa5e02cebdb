"""Options of the source finder.

Two views of the same settings:

* :data:`LEGACY_OPTIONS` lists the 156 option names of the predecessor's ``caesar`` app (legacy
  documentation, appendix A) with their kind, default, bounds, category and "advanced" mark,
  whether this implementation honours them (``effective``) and, for those it honours, the
  setting each one sets (``to``, e.g. ``"fit.chi2_cut"``); :data:`EXTENSION_OPTIONS` adds this
  implementation's own options with the same conventions. The ``caesar`` app builds its option
  schema from both (:data:`ALL_OPTIONS`).
* :class:`FinderOptions` holds the typed settings the pipeline reads, one group per step
  (:class:`BackgroundSettings`, :class:`CompactSettings`, :class:`SelectionSettings`,
  :class:`NestedSettings`, :class:`FitSettings`, :class:`ExtendedSettings`,
  :class:`SaliencySettings`) plus the run, tiling and output settings. :func:`from_legacy`
  turns legacy ``name -> value`` pairs into it, driven by the table's ``to`` column; defaults
  are the legacy app's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

# Categories exactly as the predecessor listed them.
OUT = "OUTPUT"
READ = "IMGREAD"
STATS = "IMGSTATS"
BKG = "IMGBKG"
CMP = "COMPACT-SOURCES"
SEL = "SELECTION"
NEST = "NESTED-SOURCES"
FIT = "FITTING"
RES = "IMGRES"
SMO = "IMGSMOOTH"
EXT = "EXTENDED-SOURCES"
SAL = "SALIENCY"
AC = "ACTIVE-CONTOUR"
WT = "WAVELET-TRANSFORM"
RUN = "RUN"

#: How an option's value becomes its setting (:attr:`LegacyOption.how`): the value itself
#: (converted to the setting's type), the flag negated (``no-...``), the flag clearing the
#: setting to None (``fit-no...limits``), or one of several options a builder combines
#: (:data:`_BUILDERS`: the sub-image, the fallback beam, the maps to save, ...).
VALUE, NOT, OFF, PART = "value", "not", "off", "part"
#: Target of the options read by the ``caesar`` app's program rather than by the finder.
APP = "app"


@dataclass(frozen=True)
class LegacyOption:
    """One option of the predecessor's ``caesar`` app.

    Attributes
    ----------
    name
        Option name (``--name`` on the command line).
    kind
        ``"flag"``, ``"int"``, ``"float"`` or ``"enum"``.
    default
        Default value (None for flags).
    min, max
        Advertised bounds of numeric options.
    category, subcategory
        Grouping shown by ``describe``.
    advanced
        Whether the predecessor marked it advanced.
    effective
        False when the option is accepted for compatibility but has no effect here.
    description
        One-line help; for accepted-only options it says why.
    values
        Allowed values of an enumeration.
    to
        The setting it sets: a :class:`FinderOptions` field, ``"group.field"`` for a field of
        a step's settings, or :data:`APP` (None for the options without effect).
    how
        How the value becomes the setting: :data:`VALUE`, :data:`NOT`, :data:`OFF` or
        :data:`PART`.
    """

    name: str
    kind: str
    default: Any
    min: float | None
    max: float | None
    category: str
    subcategory: str
    advanced: bool
    effective: bool
    description: str
    values: tuple[str, ...] | None = None
    to: str | None = None
    how: str = VALUE


def _o(
    name: str,
    kind: str,
    default: Any,
    lo: float | None,
    hi: float | None,
    cat: str,
    sub: str,
    adv: bool,
    eff: bool,
    desc: str,
    values: tuple[str, ...] | None = None,
    to: str | None = None,
    how: str = VALUE,
) -> LegacyOption:
    return LegacyOption(name, kind, default, lo, hi, cat, sub, adv, eff, desc, values, to, how)


_F, _I, _R, _E = "flag", "int", "float", "enum"
_NA = "accepted for compatibility, no effect here: "

#: The predecessor's 156 options, in its order (legacy doc, appendix A).
# fmt: off
LEGACY_OPTIONS: tuple[LegacyOption, ...] = (
    # OUTPUT
    _o("save-fits", _F, None, None, None, OUT, "", False, True,
       "Write FITS maps (input, background, rms, significance, residual, saliency, segmented) "
       "as selected by the save-*map flags; alone it writes them all", to="save_maps", how=PART),
    _o("save-inputmap", _F, None, None, None, OUT, "", False, True, "Write the input map",
       to="save_maps", how=PART),
    _o("save-bkgmap", _F, None, None, None, OUT, "", False, True,
       "Write the background map (background.fits)", to="save_maps", how=PART),
    _o("save-rmsmap", _F, None, None, None, OUT, "", False, True, "Write the rms map (rms.fits)",
       to="save_maps", how=PART),
    _o("save-significancemap", _F, None, None, None, OUT, "", False, True,
       "Write the significance map (significance.fits)", to="save_maps", how=PART),
    _o("save-residualmap", _F, None, None, None, OUT, "", False, True,
       "Write the residual map: image minus background minus fitted model (residual.fits)",
       to="save_maps", how=PART),
    _o("save-saliencymap", _F, None, None, None, OUT, "", False, True,
       "Write the extended-source search map (saliency.fits: the wavelet significance; the "
       "saliency map with extsfinder=SALIENCY-THRESH, the image the contour ran on with "
       "ACTIVE-CONTOUR, the merged regions' mean significance with SP-HIERCLUST)",
       to="save_maps", how=PART),
    _o("save-segmentedmap", _F, None, None, None, OUT, "", False, True,
       "Write the island label map (segmented.fits)", to="save_maps", how=PART),
    _o("convertregionstowcs", _F, None, None, None, OUT, "", True, True,
       "Write island polygons (islands.reg) in sky coordinates instead of image pixels",
       to="regions_wcs"),
    _o("regionwcs", _E, "J2000", None, None, OUT, "", True, True,
       "Sky frame of converted island regions", ("J2000", "B1950", "GALACTIC"), to="region_frame"),
    # IMGREAD
    _o("read-subimg", _F, None, None, None, READ, "", False, True,
       "Read only the sub-image xmin..xmax, ymin..ymax (pixels, 0-based, max exclusive)",
       to="subimage", how=PART),
    _o("xmin", _I, 0, -1000000, 1000000, READ, "", False, True, "Sub-image first column",
       to="subimage", how=PART),
    _o("xmax", _I, 0, -1000000, 1000000, READ, "", False, True,
       "Sub-image end column (exclusive; 0 = image width)", to="subimage", how=PART),
    _o("ymin", _I, 0, -1000000, 1000000, READ, "", False, True, "Sub-image first row",
       to="subimage", how=PART),
    _o("ymax", _I, 0, -1000000, 1000000, READ, "", False, True,
       "Sub-image end row (exclusive; 0 = image height)", to="subimage", how=PART),
    # IMGSTATS
    _o("no-parallelmedian", _F, None, None, None, STATS, "", True, False,
       _NA + "medians are always computed with NumPy"),
    # IMGBKG
    _o("bmaj", _R, 10.0, 0, 3600, BKG, "", True, True,
       "Beam major axis (arcsec), used only if the header has no beam and it is given",
       to="beam_fallback", how=PART),
    _o("bmin", _R, 5.0, 0, 3600, BKG, "", True, True,
       "Beam minor axis (arcsec), used only if the header has no beam and it is given",
       to="beam_fallback", how=PART),
    _o("bpa", _R, 0.0, 0, 180, BKG, "", True, True,
       "Beam position angle (deg), used only if the header has no beam",
       to="beam_fallback", how=PART),
    _o("mappixsize", _R, 1.0, 0, 3600, BKG, "", True, False,
       _NA + "the pixel size always comes from the WCS"),
    _o("globalbkg", _F, None, None, None, BKG, "", False, True,
       "Use one global background and noise instead of local maps", to="background.local", how=NOT),
    _o("bkgestimator", _E, "ClippedMedian", None, None, BKG, "", False, True,
       "Background/noise estimator of each box (ClippedMedian here, Median in the predecessor)",
       ("Mean", "Median", "BiWeight", "ClippedMedian"),
       to="background.estimator"),
    _o("bkgboxpix", _F, None, None, None, BKG, "", False, True,
       "bkgbox is in pixels instead of beams", to="background.box_in_beams", how=NOT),
    _o("bkgbox", _R, 20.0, 0.01, 1000.0, BKG, "", False, True,
       "Background box size, in beams (or pixels with bkgboxpix)", to="background.box"),
    _o("bkggrid", _R, 0.2, 0.0, 1.0, BKG, "", False, True,
       "Background grid step as a fraction of the box", to="background.grid"),
    _o("no-bkg2ndpass", _F, None, None, None, BKG, "", True, True,
       "Skip the second noise pass on the background-subtracted image",
       to="background.second_pass", how=NOT),
    _o("bkgskipoutliers", _F, None, None, None, BKG, "", True, True,
       "Mask detected sources and estimate the background again (on by default here; "
       "no-bkgskipoutliers turns it off)", to="background.skip_outliers", how=PART),
    _o("sourcebkgboxborder", _I, 20, 0, 1000, BKG, "", True, True,
       "Border (pixels) of the per-source background box used by fit-usebkgboxestimate",
       to="background.source_box_border"),
    # COMPACT-SOURCES
    _o("no-compactsearch", _F, None, None, None, CMP, "", False, True,
       "Do not search compact sources", to="compact.enabled", how=NOT),
    _o("npixmin", _I, 5, 0, 10000, CMP, "", False, True, "Minimum pixels of an island",
       to="compact.min_npix"),
    _o("seedthr", _R, 5.0, 0, 10000, CMP, "", False, True,
       "Seed threshold (sigma above the local background)", to="compact.seed_thr"),
    _o("mergethr", _R, 2.6, 0, 10000, CMP, "", False, True,
       "Merge (flood-fill) threshold (sigma)", to="compact.merge_thr"),
    _o("compactsearchiters", _I, 1, 0, 100, CMP, "", False, True,
       "Number of compact search iterations (found sources masked, seed lowered)",
       to="compact.n_iters", how=PART),
    _o("seedthrstep", _R, 0.5, 0, 10, CMP, "", False, True,
       "Seed threshold decrease per iteration", to="compact.seed_thr_step"),
    # SELECTION
    _o("selectsources", _F, None, None, None, CMP, SEL, False, True,
       "Apply the source selection and point-like tagging cuts", to="selection.enabled"),
    _o("no-boundingboxcut", _F, None, None, None, CMP, SEL, False, True,
       "Do not remove line-like islands (minimum bounding box)",
       to="selection.use_bbox_cut", how=NOT),
    _o("minboundingbox", _I, 2, 0, 1000000, CMP, SEL, False, True,
       "Minimum short side (pixels) of the island's minimum-area rectangle",
       to="selection.min_bbox"),
    _o("no-circratiocut", _F, None, None, None, CMP, SEL, True, True,
       "Do not use circularity in point-like tagging", to="selection.use_circ_cut", how=NOT),
    _o("circratiothr", _R, 0.4, 0.0, 1.0, CMP, SEL, True, True,
       "Minimum circularity of point-like sources", to="selection.circ_thr"),
    _o("no-elongationcut", _F, None, None, None, CMP, SEL, True, True,
       "Do not use elongation in point-like tagging", to="selection.use_elong_cut", how=NOT),
    _o("elongationthr", _R, 0.7, 0.0, 1.0, CMP, SEL, True, True,
       "Maximum elongation of point-like sources", to="selection.elong_thr"),
    _o("ellipsearearatiocut", _F, None, None, None, CMP, SEL, True, True,
       "Use the moment-ellipse to pixel-area ratio in point-like tagging",
       to="selection.use_ellipse_area_cut"),
    _o("ellipsearearatiominthr", _R, 0.6, 0.0, 10.0, CMP, SEL, True, True,
       "Minimum ellipse area ratio", to="selection.ellipse_area_min"),
    _o("ellipsearearatiomaxthr", _R, 1.4, 0.0, 10.0, CMP, SEL, True, True,
       "Maximum ellipse area ratio", to="selection.ellipse_area_max"),
    _o("maxnpixcut", _F, None, None, None, CMP, SEL, False, True,
       "Use a maximum pixel count in point-like tagging", to="selection.use_max_npix_cut"),
    _o("maxnpix", _I, 1000, 0.0, 10000000, CMP, SEL, False, True,
       "Maximum pixels of point-like sources", to="selection.max_npix"),
    _o("no-nbeamscut", _F, None, None, None, CMP, SEL, False, True,
       "Do not use the number of beams in point-like tagging",
       to="selection.use_nbeams_cut", how=NOT),
    _o("nbeamsthr", _R, 3.0, 0.0, 1000.0, CMP, SEL, False, True,
       "Maximum number of beams of point-like sources", to="selection.nbeams_thr"),
    # NESTED-SOURCES
    _o("no-nestedsearch", _F, None, None, None, CMP, NEST, False, True,
       "Do not search nested sources inside large islands", to="nested.enabled", how=NOT),
    _o("blobmaskmethod", _E, "MultiScaleLoG", None, None, CMP, NEST, False, True,
       "Blob detector of the nested search", ("GausLaplacian", "MultiScaleLoG"),
       to="nested.blob_method"),
    _o("nested-sourcetobeamthr", _R, 5.0, 0.0, 1000000.0, CMP, NEST, False, True,
       "Search nested sources in islands larger than this many beams", to="nested.beams_thr"),
    _o("nested-blobthr", _R, 0.0, 0.0, 100.0, CMP, NEST, True, True,
       "Blob response threshold as a multiple of the median positive response",
       to="nested.blob_thr"),
    _o("nested-minmotherdist", _I, 2, 0, 100, CMP, NEST, True, True,
       "A single nested blob is kept if its centre is more than this (px) from the mother's",
       to="nested.min_mother_dist"),
    _o("nested-maxmotherpixmatch", _R, 0.5, 0.0, 1.0, CMP, NEST, True, True,
       "... or if it covers less than this fraction of the mother", to="nested.max_pix_match"),
    _o("nested-blobpeakzthr", _R, 5.0, 0.0, 10000.0, CMP, NEST, False, True,
       "Peak significance of blobs in the blob-response map", to="nested.peak_zthr"),
    _o("nested-blobpeakzthrmerge", _R, 2.5, 0.0, 10000.0, CMP, NEST, False, True,
       "Flood-fill significance of blobs in the blob-response map", to="nested.merge_zthr"),
    _o("nested-blobminscale", _R, 1.0, 0.0, 10000.0, CMP, NEST, False, True,
       "Smallest blob scale, in beam FWHM", to="nested.min_scale"),
    _o("nested-blobmaxscale", _R, 3.0, 0.0, 10000.0, CMP, NEST, False, True,
       "Largest blob scale, in beam FWHM", to="nested.max_scale"),
    _o("nested-blobscalestep", _R, 1.0, 0.0, 10000.0, CMP, NEST, False, True,
       "Blob scale step (pixels of sigma)", to="nested.scale_step"),
    _o("nested-blobkernfactor", _R, 1.0, 0.0, 1000.0, CMP, NEST, True, True,
       "LoG kernel half-size in sigma (at least 3 is used, narrower kernels truncate the LoG)",
       to="nested.kern_factor"),
    # FITTING
    _o("fitsources", _F, None, None, None, CMP, FIT, False, True,
       "Fit compact sources with multi-component 2-D Gaussians (on by default here; "
       "no-fitsources turns it off)", to="fit.enabled", how=PART),
    _o("fit-usethreads", _F, None, None, None, CMP, FIT, True, False,
       _NA + "fits are vectorised; use nproc for parallel tiles"),
    _o("fit-minimizer", _E, "Minuit2", None, None, CMP, FIT, True, False,
       _NA + "a batched Levenberg-Marquardt with analytic Jacobian is used", ("Minuit", "Minuit2")),
    _o("fit-minimizeralgo", _E, "minimize", None, None, CMP, FIT, True, False,
       _NA + "a batched Levenberg-Marquardt with analytic Jacobian is used",
       ("migrad", "simplex", "minimize", "scan", "fumili")),
    _o("fit-printlevel", _I, 0, 0, 3, CMP, FIT, True, False, _NA + "ROOT minimiser print level"),
    _o("fit-strategy", _I, 2, 0, 3, CMP, FIT, True, False, _NA + "Minuit strategy"),
    _o("fit-maxnbeams", _I, 20, 0, 100000, CMP, FIT, False, True,
       "Fit an island as a whole only if it spans at most this many beams", to="fit.max_nbeams"),
    _o("fit-maxcomponents", _I, 3, 0, 100, CMP, FIT, False, True,
       "Maximum Gaussian components per fitted source", to="fit.max_components", how=PART),
    _o("fit-usenestedascomponents", _F, None, None, None, CMP, FIT, True, True,
       "Seed the components from the nested sources", to="fit.use_nested"),
    _o("fit-freebkg", _F, None, None, None, CMP, FIT, False, True,
       "Fit a free constant offset on top of the background map", to="fit.free_bkg"),
    _o("fit-estimatedbkg", _F, None, None, None, CMP, FIT, False, False,
       _NA + "the estimated background map is always subtracted before fitting"),
    _o("fit-usebkgboxestimate", _F, None, None, None, CMP, FIT, False, True,
       "Subtract the per-source box background (median around the source) instead of the map",
       to="fit.bkg_box"),
    _o("fit-bkg", _R, 0.0, -1000000.0, 1000000.0, CMP, FIT, False, False,
       _NA + "the estimated background map is always used"),
    _o("fit-ampllimit", _R, 0.3, 0.0, 2.0, CMP, FIT, False, True,
       "Amplitude bounds: start value times (1 +- limit)", to="fit.ampl_limit"),
    _o("prefit-freeampl", _F, None, None, None, CMP, FIT, True, False,
       _NA + "no pre-fit is needed by the Levenberg-Marquardt fitter"),
    _o("fit-sigmalimit", _R, 0.3, 0.0, 2.0, CMP, FIT, False, True,
       "Sigma bounds: start value times (1 +- limit)", to="fit.sigma_limit"),
    _o("fit-thetalimit", _R, 90.0, 0.0, 360.0, CMP, FIT, False, True,
       "Angle bounds: start value +- limit (deg)", to="fit.theta_limit_deg"),
    _o("fit-nobkglimits", _F, None, None, None, CMP, FIT, False, True,
       "No bounds on the free offset", to="fit.bkg_limits", how=NOT),
    _o("fit-noampllimits", _F, None, None, None, CMP, FIT, False, True, "No amplitude bounds",
       to="fit.ampl_limit", how=OFF),
    _o("fit-nosigmalimits", _F, None, None, None, CMP, FIT, False, True, "No sigma bounds",
       to="fit.sigma_limit", how=OFF),
    _o("fit-noposlimits", _F, None, None, None, CMP, FIT, False, True,
       "No centroid bounds (besides the island bounding box)", to="fit.pos_limit", how=OFF),
    _o("fit-poslimit", _I, 3, 0, 1000, CMP, FIT, False, True,
       "Centroid bounds: start value +- limit (px)", to="fit.pos_limit"),
    _o("prefit-freepos", _F, None, None, None, CMP, FIT, False, False,
       _NA + "no pre-fit is needed by the Levenberg-Marquardt fitter"),
    _o("fit-nothetalimits", _F, None, None, None, CMP, FIT, False, True, "No angle bounds",
       to="fit.theta_limit_deg", how=OFF),
    _o("fit-fixsigma", _F, None, None, None, CMP, FIT, True, True,
       "Keep the component sigmas at their start values", to="fit.fix_sigma"),
    _o("prefit-fixsigma", _F, None, None, None, CMP, FIT, True, False,
       _NA + "no pre-fit is needed by the Levenberg-Marquardt fitter"),
    _o("fit-fixtheta", _F, None, None, None, CMP, FIT, True, True,
       "Keep the component angles at their start values", to="fit.fix_theta"),
    _o("prefit-fixtheta", _F, None, None, None, CMP, FIT, True, False,
       _NA + "no pre-fit is needed by the Levenberg-Marquardt fitter"),
    _o("fit-peakminkern", _I, 3, 0, 100, CMP, FIT, True, False,
       _NA + "component seeds come from curvature summits (3x3 maxima)"),
    _o("fit-peakmaxkern", _I, 7, 0, 100, CMP, FIT, True, False,
       _NA + "component seeds come from curvature summits (3x3 maxima)"),
    _o("fit-peakmultiplicitythr", _I, 1, -1, 100, CMP, FIT, True, False,
       _NA + "component seeds come from curvature summits (3x3 maxima)"),
    _o("fit-peakshifttol", _I, 2, 0, 20, CMP, FIT, True, False,
       _NA + "component seeds come from curvature summits (3x3 maxima)"),
    _o("fit-peakzthrmin", _R, 1.0, 0.0, 1000.0, CMP, FIT, False, True,
       "Minimum significance of secondary component peaks (at least seedthr is used)",
       to="fit.peak_zthr"),
    _o("fit-fcntol", _R, 0.01, 0.0, 100.0, CMP, FIT, True, True,
       "Convergence tolerance on the chi2 change (relative to the number of data points)",
       to="fit.tol"),
    _o("fit-maxniters", _I, 10000, 0, 1000000, CMP, FIT, True, True,
       "Maximum iterations per fit (capped at 200 here)", to="fit.max_iters"),
    _o("fit-noimproveconvergence", _F, None, None, None, CMP, FIT, True, True,
       "Do not widen bounds that a fitted parameter runs into", to="fit.widen_bounds", how=NOT),
    _o("fit-noretry", _F, None, None, None, CMP, FIT, True, True,
       "Do not refit with fewer components after a failed fit", to="fit.retry", how=NOT),
    _o("fit-nretries", _I, 10, 0, 100000, CMP, FIT, True, True,
       "Maximum bound widenings per fit (capped at 10 here)", to="fit.n_retries"),
    _o("fit-parboundincreasestep", _R, 0.1, 0.0, 10.0, CMP, FIT, True, True,
       "Bound widening step (fraction of the bound range)", to="fit.bound_step"),
    _o("fit-improveerrors", _F, None, None, None, CMP, FIT, True, False,
       _NA + "errors always come from the analytic Jacobian at the minimum"),
    _o("fit-scaledatatomax", _F, None, None, None, CMP, FIT, True, False,
       _NA + "fits are done in units of the local noise"),
    _o("fit-nochi2cut", _F, None, None, None, CMP, FIT, False, True,
       "Do not use the reduced chi2 in the fit quality", to="fit.chi2_cut", how=OFF),
    _o("fit-chi2cut", _R, 5.0, 0.0, 1000.0, CMP, FIT, False, True,
       "Reduced chi2 below which a converged fit is of high quality", to="fit.chi2_cut"),
    _o("fit-useellipsecuts", _F, None, None, None, CMP, FIT, True, False,
       _NA + "the catalogues have no sourceness column to flag a component fake in"),
    # IMGRES
    _o("computeresiduals", _F, None, None, None, RES, "", False, False,
       _NA + "the extended search always runs on the image with compact sources removed"),
    _o("res-removenested", _F, None, None, None, RES, "", False, False,
       _NA + "compact islands above res-zthr are removed whole"),
    _o("res-zthr", _R, 5.0, 0.0, 10000.0, RES, "", False, True,
       "Compact islands peaking above this significance are removed before the extended "
       "search", to="extended.res_zthr"),
    _o("res-zhighthr", _R, 10.0, 0.0, 10000.0, RES, "", False, False,
       _NA + "compact islands above res-zthr are removed whole"),
    _o("dilatekernsize", _I, 9, 1, 1001, RES, "", False, True,
       "Dilation kernel (px) around compact islands removed before the extended search",
       to="extended.dilate_size"),
    _o("res-removedsourcetype", _E, "POINT-LIKE", None, None, RES, "", False, False,
       _NA + "compact islands above res-zthr are removed whole",
       ("ALL", "COMPACT", "POINT-LIKE", "EXTENDED")),
    _o("res-pssubtractionmethod", _E, "DILATION", None, None, RES, "", False, False,
       _NA + "the extended search uses dilation; residual.fits subtracts the fitted models",
       ("DILATION", "FITMODEL")),
    _o("res-bkgaroundsource", _F, None, None, None, RES, "", False, False,
       _NA + "removed pixels are replaced by the local background map"),
    # IMGSMOOTH
    _o("no-presmoothing", _F, None, None, None, SMO, "", False, True,
       "No smoothing of the saliency search image (the wavelet search smooths by construction)",
       to="saliency.guided", how=PART),
    _o("smoothfilter", _E, "GUIDED", None, None, SMO, "", False, True,
       "Smoothing of the saliency search image: GUIDED (edge-preserving) or GAUSSIAN, which "
       "adds no smoothing here (the block means it runs on smooth more than a 5x5 blur)",
       ("GAUSSIAN", "GUIDED"), to="saliency.guided", how=PART),
    _o("guidedfilter-radius", _R, 12.0, 0.0, 1000.0, SMO, "", False, True,
       "Guided filter radius (px) for the saliency search", to="saliency.guided", how=PART),
    _o("guidedfilter-eps", _R, 0.04, 0.0, 1000.0, SMO, "", False, True,
       "Guided filter regularisation (fraction of 255^2) for the saliency search",
       to="saliency.guided", how=PART),
    # EXTENDED-SOURCES
    _o("no-extendedsearch", _F, None, None, None, EXT, "", False, True,
       "Do not search extended sources", to="extended.enabled", how=NOT),
    _o("extsfinder", _E, "WT-THRESH", None, None, EXT, "", False, True,
       "Extended-source method: WT-THRESH (wavelet, the default here), SALIENCY-THRESH "
       "(multi-resolution saliency, the predecessor's default), SP-HIERCLUST (superpixels "
       "merged hierarchically, sp-*) or ACTIVE-CONTOUR (the wavelet seeds refined by an "
       "active contour, activecontour, ac-*, cv-*)",
       ("WT-THRESH", "SP-HIERCLUST", "ACTIVE-CONTOUR", "SALIENCY-THRESH"), to="extended.method"),
    _o("activecontour", _E, "CHANVESE", None, None, EXT, "", False, True,
       "Active contour of ACTIVE-CONTOUR: CHANVESE (Chan-Vese level set, cv-*) or LRAC "
       "(localised region-based contour: local means in a window)",
       ("CHANVESE", "LRAC"), to="contour.method"),
    _o("sp-size", _I, 20, 5, 10000, EXT, SAL, False, True,
       "Superpixel size, in pixels, of the SP-HIERCLUST method", to="superpixel.size"),
    _o("sp-beta", _R, 1.0, 1e-10, 1e10, EXT, SAL, False, True,
       "Superpixel regularisation of the saliency and superpixel searches (SALIENCY-THRESH, "
       "SP-HIERCLUST)", to="saliency.beta"),
    _o("sp-minarea", _I, 10, 1, 10000, EXT, SAL, False, True,
       "Smallest superpixel, in pixels, of the saliency and superpixel searches "
       "(SALIENCY-THRESH, SP-HIERCLUST)",
       to="saliency.min_area"),
    _o("saliency-nooptimalthr", _F, None, None, None, EXT, SAL, False, True,
       "Cut the saliency map at saliency-thr x median only (no Otsu/valley threshold)",
       to="saliency.optimal_thr", how=NOT),
    _o("saliency-thr", _R, 2.8, 0.0, 10.0, EXT, SAL, False, True,
       "Saliency threshold factor on the map's median (SALIENCY-THRESH)", to="saliency.thr_factor"),
    _o("saliency-minreso", _I, 20, 1, 1000, EXT, SAL, False, True,
       "Smallest superpixel size, in pixels, of the saliency resolutions", to="saliency.reso_min"),
    _o("saliency-maxreso", _I, 60, 1, 1000, EXT, SAL, False, True,
       "Largest superpixel size, in pixels, of the saliency resolutions",
       to="saliency.reso_max", how=PART),
    _o("saliency-resostep", _I, 10, 1, 100, EXT, SAL, False, True,
       "Step between the saliency resolutions, in pixels", to="saliency.reso_step"),
    _o("saliency-nn", _R, 1.0, 0, 1.0, EXT, SAL, True, True,
       "Fraction of the regions averaged in a region's saliency score", to="saliency.nn_factor"),
    _o("saliency-usebkgmap", _F, None, None, None, EXT, SAL, True, False,
       _NA + "the background map is not added to the saliency map"),
    _o("saliency-usermsmap", _F, None, None, None, EXT, SAL, True, False,
       _NA + "the noise map is not added to the saliency map"),
    _o("saliency-userobustpars", _F, None, None, None, EXT, SAL, False, True,
       "Median instead of mean per superpixel in the saliency search", to="saliency.robust"),
    _o("ac-niters", _I, 1000, 1, 100000, EXT, AC, False, True,
       "Most contour iterations of ACTIVE-CONTOUR", to="contour.n_iters"),
    _o("ac-levelset", _E, "SALIENCY", None, None, EXT, AC, False, True,
       "Initial contour of ACTIVE-CONTOUR: SALIENCY (the seeds: the wavelet search's mask; "
       "the default here), CIRCLE (a centred disk) or CHECKERBOARD",
       ("CIRCLE", "CHECKERBOARD", "SALIENCY"), to="contour.init"),
    _o("ac-levelsetsize", _R, 0.1, 0.0, 1.0, EXT, AC, False, True,
       "Radius of the CIRCLE, side of the CHECKERBOARD squares, as a fraction of the "
       "image's smaller side", to="contour.init_size"),
    _o("ac-tolerance", _R, 0.1, 0.0, 1.0, EXT, AC, False, True,
       "The contour stops when fewer pixels than this fraction of its boundary change side "
       "in an outer iteration", to="contour.tolerance"),
    _o("cv-nitersinner", _I, 5, 0, 100000, EXT, AC, True, True,
       "Chan-Vese steps per outer iteration (CHANVESE)", to="contour.cv_inner"),
    _o("cv-nitersreinit", _I, 5, 0, 100000, EXT, AC, True, True,
       "Re-initialise the Chan-Vese level set to a signed distance every this many outer "
       "iterations (0 = never)", to="contour.cv_reinit"),
    _o("cv-timestep", _R, 0.007, 0.0, 1000.0, EXT, AC, False, True,
       "Chan-Vese time step (image in [0, 255])", to="contour.dt"),
    _o("cv-wsize", _R, 1.0, 0.0, 1000.0, EXT, AC, False, True,
       "Chan-Vese grid step h of the finite differences (reduced pixels)", to="contour.h"),
    _o("cv-lambda1", _R, 1.0, 0.0, 100.0, EXT, AC, False, True,
       "Chan-Vese weight of the inside fit (also LRAC's)", to="contour.lambda1"),
    _o("cv-lambda2", _R, 2.0, 0.0, 100.0, EXT, AC, False, True,
       "Chan-Vese weight of the outside fit (also LRAC's)", to="contour.lambda2"),
    _o("cv-mu", _R, 0.5, 0.0, 100.0, EXT, AC, False, True,
       "Chan-Vese weight of the contour length", to="contour.mu"),
    _o("cv-nu", _R, 0.0, 0.0, 100.0, EXT, AC, False, True,
       "Chan-Vese weight of the inside area (shrinks the contour)", to="contour.nu"),
    _o("cv-p", _R, 1.0, 0.0, 100.0, EXT, AC, False, True,
       "Chan-Vese exponent of the length term (length**p)", to="contour.p"),
    _o("wtscalemin", _I, 3, 1, 10, EXT, WT, False, True,
       "Smallest wavelet scale of the extended search (2**n px)", to="extended.wt_scale_min"),
    _o("wtscalemax", _I, 6, 1, 10, EXT, WT, False, True,
       "Largest wavelet scale of the extended search", to="extended.wt_scale_max", how=PART),
    # RUN
    _o("loglevel", _E, "INFO", None, None, RUN, "", False, True,
       "Log level of the job log", ("INFO", "DEBUG", "WARN", "ERROR", "OFF"), to=APP),
    _o("no-logredir", _F, None, None, None, RUN, "", False, False,
       _NA + "the log always goes to the job log"),
    _o("no-mpi", _F, None, None, None, RUN, "", False, True,
       "Under mpirun, run on rank 0 alone (the tiles are otherwise shared among the ranks)",
       to=APP),
    _o("nproc", _I, 1, 1, 1000, RUN, "", False, True,
       "Number of worker processes for tiles (large images are tiled automatically); "
       "when not given, the cores the backend granted the job", to="nproc"),
    _o("nthreads", _I, 1, -1, 1000, RUN, "", False, False,
       _NA + "NumPy kernels are single-threaded; use nproc"),
    _o("tilesplit", _F, None, None, None, RUN, "", False, True,
       "Split the image into tiles (overlapping, merged at the edges)", to="tile_split"),
    _o("tilesize", _I, 0, 0.0, 10000000.0, RUN, "", False, True,
       "Tile size in pixels (0 = automatic)", to="tile_size"),
    _o("tilestep", _R, 1.0, 0.001, 1.0, RUN, "", False, True,
       "Tile step as a fraction of the tile size; below 1 widens the overlap", to="tile_step"),
    _o("mergeedgesources", _F, None, None, None, RUN, "", False, False,
       _NA + "sources on tile edges are always merged"),
    _o("no-mergesources", _F, None, None, None, RUN, "", False, True,
       "Do not merge touching compact and extended sources", to="extended.merge_sources", how=NOT),
)

#: Options of this implementation that the predecessor did not have (same conventions).
EXTENSION_OPTIONS: tuple[LegacyOption, ...] = (
    _o("no-bkgskipoutliers", _F, None, None, None, BKG, "", True, True,
       "Estimate the background once, without masking the detected sources (the "
       "predecessor's default); bkgskipoutliers wins when both are given",
       to="background.skip_outliers", how=PART),
    _o("no-fitsources", _F, None, None, None, CMP, FIT, False, True,
       "Do not fit compact sources (the predecessor's default): one catalogue row per island "
       "or nested source, fluxes summed over its pixels; fitsources wins when both are given",
       to="fit.enabled", how=PART),
    _o("fit-nopointmodel", _F, None, None, None, CMP, FIT, True, True,
       "Keep the free-shape fit of every single component (by default one whose shape the "
       "data do not constrain takes the beam's shape: its flux is then the fitted peak)",
       to="fit.point_model_thr", how=OFF),
    _o("fit-pointmodelthr", _R, 11.34, 0.0, 1000000.0, CMP, FIT, True, True,
       "Effective chi2 gain of the free shape (3 parameters, beam-correlated noise) below "
       "which the beam-shaped model is kept; 11.34 is the 99th percentile for a point source",
       to="fit.point_model_thr"),
    _o("fit-nodeblend", _F, None, None, None, CMP, FIT, True, True,
       "Keep one component for a single-peaked source (by default one stretched beyond the "
       "beam is fitted again as a blended pair, kept when significantly better)",
       to="fit.deblend_thr", how=OFF),
    _o("fit-deblendthr", _R, 22.46, 0.0, 1000000.0, CMP, FIT, True, True,
       "Effective chi2 gain of a blended pair over one component (6 more parameters, "
       "beam-correlated noise) at which the pair is kept; 22.46 is the 99.9th percentile",
       to="fit.deblend_thr"),
)
# fmt: on

#: Every option of the ``caesar`` app: the predecessor's, then the extensions.
ALL_OPTIONS: tuple[LegacyOption, ...] = LEGACY_OPTIONS + EXTENSION_OPTIONS
LEGACY_BY_NAME: dict[str, LegacyOption] = {o.name: o for o in ALL_OPTIONS}

#: Upper limits on loop counts that are impractical in Python (documented deviations).
MAX_FIT_ITERS = 200
MAX_FIT_WIDENINGS = 10


@dataclass(frozen=True)
class BackgroundSettings:
    """Background and noise maps (spec 2; legacy option names in brackets).

    Attributes
    ----------
    local
        Local maps on a grid of boxes, else one global value (not ``globalbkg``).
    estimator
        Estimator of each box: Mean, Median, BiWeight or ClippedMedian (``bkgestimator``).
    box, box_in_beams
        Box size, in beams (``bkgbox``) or in pixels (``bkgboxpix``).
    grid
        Grid step as a fraction of the box (``bkggrid``).
    second_pass
        Second noise pass on the background-subtracted image (not ``no-bkg2ndpass``).
    skip_outliers
        Mask the detected sources and estimate again (``bkgskipoutliers``).
    source_box_border
        Border (px) of the per-source box of the fits' box background
        (``sourcebkgboxborder``, with ``fit-usebkgboxestimate``).
    """

    local: bool = True
    estimator: str = "ClippedMedian"
    box: float = 20.0
    box_in_beams: bool = True
    grid: float = 0.2
    second_pass: bool = True
    skip_outliers: bool = True
    source_box_border: int = 20

    def box_px(self, beam_width_px: float) -> float:
        """The box size in pixels, for a beam ``beam_width_px`` wide."""
        return self.box * beam_width_px if self.box_in_beams else self.box


@dataclass(frozen=True)
class CompactSettings:
    """Compact-source search (spec 3).

    Attributes
    ----------
    enabled
        Search compact sources (not ``no-compactsearch``).
    min_npix
        Minimum pixels of an island (``npixmin``; also of extended regions).
    seed_thr, merge_thr
        Seed and flood-fill significance (``seedthr``, ``mergethr``).
    n_iters, seed_thr_step
        Iterations and seed decrease per iteration (``compactsearchiters``, ``seedthrstep``).
    """

    enabled: bool = True
    min_npix: int = 5
    seed_thr: float = 5.0
    merge_thr: float = 2.6
    n_iters: int = 1
    seed_thr_step: float = 0.5


@dataclass(frozen=True)
class SelectionSettings:
    """Source selection and point-like tagging (spec 3.6).

    Attributes
    ----------
    enabled
        Apply the cuts (``selectsources``).
    use_bbox_cut, min_bbox
        Remove line-like islands (``minboundingbox``; not ``no-boundingboxcut``).
    use_circ_cut, circ_thr
        Circularity of point-like sources (``circratiothr``).
    use_elong_cut, elong_thr
        Elongation of point-like sources (``elongationthr``).
    use_ellipse_area_cut, ellipse_area_min, ellipse_area_max
        Ellipse-to-pixel area ratio (``ellipsearearatiocut``, ``...minthr``, ``...maxthr``).
    use_max_npix_cut, max_npix
        Maximum pixels of point-like sources (``maxnpixcut``, ``maxnpix``).
    use_nbeams_cut, nbeams_thr
        Maximum beams of point-like sources (``nbeamsthr``; not ``no-nbeamscut``).
    """

    enabled: bool = False
    use_bbox_cut: bool = True
    min_bbox: float = 2.0
    use_circ_cut: bool = True
    circ_thr: float = 0.4
    use_elong_cut: bool = True
    elong_thr: float = 0.7
    use_ellipse_area_cut: bool = False
    ellipse_area_min: float = 0.6
    ellipse_area_max: float = 1.4
    use_max_npix_cut: bool = False
    max_npix: int = 1000
    use_nbeams_cut: bool = True
    nbeams_thr: float = 3.0


@dataclass(frozen=True)
class NestedSettings:
    """Nested sources inside large islands (spec 4; options ``nested-*``).

    Attributes
    ----------
    enabled
        Search nested sources (not ``no-nestedsearch``).
    blob_method
        ``MultiScaleLoG`` or ``GausLaplacian`` (``blobmaskmethod``).
    beams_thr
        Search islands larger than this many beams (``nested-sourcetobeamthr``).
    blob_thr
        Blob response threshold, times the median positive response (``nested-blobthr``).
    min_mother_dist, max_pix_match
        Single-blob rule (``nested-minmotherdist``, ``nested-maxmotherpixmatch``).
    peak_zthr, merge_zthr
        Peak and flood-fill significance of the blobs (``nested-blobpeakzthr``,
        ``nested-blobpeakzthrmerge``).
    min_scale, max_scale, scale_step
        Blob scales, in beam FWHM (``nested-blobminscale``, ``...maxscale``, ``...scalestep``).
    kern_factor
        LoG kernel half-size in sigma (``nested-blobkernfactor``).
    """

    enabled: bool = True
    blob_method: str = "MultiScaleLoG"
    beams_thr: float = 5.0
    blob_thr: float = 0.0
    min_mother_dist: float = 2.0
    max_pix_match: float = 0.5
    peak_zthr: float = 5.0
    merge_zthr: float = 2.5
    min_scale: float = 1.0
    max_scale: float = 3.0
    scale_step: float = 1.0
    kern_factor: float = 1.0


@dataclass(frozen=True)
class FitSettings:
    """Gaussian fits of compact sources (spec 6; options ``fit-*``).

    :class:`~caesar_rest.sourcefinder.fitting.FitConfig` is these settings as the fitter uses
    them (resolved against the beam and the seed threshold).

    Attributes
    ----------
    enabled
        Fit (on by default, unlike the predecessor; ``no-fitsources`` turns it off).
    max_nbeams
        Fit an island whole only up to this many beams (``fit-maxnbeams``).
    max_components
        Components per source (``fit-maxcomponents``, at least 1).
    use_nested
        Seed the components from the nested sources (``fit-usenestedascomponents``).
    free_bkg, bkg_limits
        A free offset (``fit-freebkg``), bounded (not ``fit-nobkglimits``).
    bkg_box
        Subtract the per-source box background instead of the map (``fit-usebkgboxestimate``).
    ampl_limit, sigma_limit, theta_limit_deg, pos_limit
        Parameter bounds around the start values, None = unbounded (``fit-ampllimit`` ...
        ``fit-poslimit``; ``fit-noampllimits`` ... set None).
    fix_sigma, fix_theta
        Keep sigmas and angles at their start values (``fit-fixsigma``, ``fit-fixtheta``).
    peak_zthr
        Secondary peaks' significance (``fit-peakzthrmin``; at least ``seedthr`` is used).
    tol, max_iters
        Convergence tolerance and iteration cap (``fit-fcntol``, ``fit-maxniters``).
    widen_bounds, n_retries, bound_step
        Widen bounds that a parameter runs into (not ``fit-noimproveconvergence``), at most
        ``fit-nretries`` times, by ``fit-parboundincreasestep``.
    retry
        Refit with fewer components after a failed fit (not ``fit-noretry``).
    chi2_cut
        Reduced chi2 of a HIGH quality fit, None = no cut (``fit-chi2cut``, ``fit-nochi2cut``).
    point_model_thr
        Point-model test threshold, None = keep every free-shape fit (``fit-pointmodelthr``,
        ``fit-nopointmodel``).
    deblend_thr
        Blend test threshold: a stretched one-component fit becomes two components when
        their effective chi2 gain is at least this, None = no test (``fit-deblendthr``,
        ``fit-nodeblend``).
    """

    enabled: bool = True
    max_nbeams: float = 20.0
    max_components: int = 3
    use_nested: bool = False
    free_bkg: bool = False
    bkg_box: bool = False
    ampl_limit: float | None = 0.3
    sigma_limit: float | None = 0.3
    theta_limit_deg: float | None = 90.0
    pos_limit: float | None = 3.0
    bkg_limits: bool = True
    fix_sigma: bool = False
    fix_theta: bool = False
    peak_zthr: float = 1.0
    tol: float = 0.01
    max_iters: int = 10000
    widen_bounds: bool = True
    retry: bool = True
    n_retries: int = 10
    bound_step: float = 0.1
    chi2_cut: float | None = 5.0
    point_model_thr: float | None = 11.34
    deblend_thr: float | None = 22.46


@dataclass(frozen=True)
class ExtendedSettings:
    """Extended-source search (spec 5) and its merge with the compact islands (spec 5.6).

    Attributes
    ----------
    enabled
        Search extended sources (not ``no-extendedsearch``).
    method
        ``WT-THRESH`` (wavelet), ``SALIENCY-THRESH``, ``SP-HIERCLUST`` or
        ``ACTIVE-CONTOUR`` (``extsfinder``).
    res_zthr, dilate_size
        Compact islands peaking above ``res-zthr`` are removed, dilated by ``dilatekernsize``
        px, before the search.
    wt_scale_min, wt_scale_max
        Wavelet scales (``wtscalemin``, ``wtscalemax``; the block means are
        ``2**(wt_scale_min-1)`` px for both methods).
    merge_sources
        Merge touching compact and extended sources (not ``no-mergesources``).
    """

    enabled: bool = True
    method: str = "WT-THRESH"
    res_zthr: float = 5.0
    dilate_size: int = 9
    wt_scale_min: int = 3
    wt_scale_max: int = 6
    merge_sources: bool = True


@dataclass(frozen=True)
class SaliencySettings:
    """Parameters of the saliency search (legacy option names in brackets).

    Attributes
    ----------
    reso_min, reso_max, reso_step
        Region sizes in full-image pixels (``saliency-minreso/maxreso/resostep``).
    thr_factor
        Threshold factor on the median (``saliency-thr``).
    nn_factor
        Fraction of regions averaged for a region's score (``saliency-nn``).
    optimal_thr
        Use the Otsu/valley threshold (not ``saliency-nooptimalthr``).
    robust
        Median instead of mean per region (``saliency-userobustpars``).
    beta
        SLIC regularisation (``sp-beta``).
    min_area
        Smallest superpixel in full-image pixels (``sp-minarea``).
    guided
        Guided-filter pre-smoothing ``(radius in full-image pixels, eps)``
        (``guidedfilter-radius``, ``guidedfilter-eps``), or None (``no-presmoothing``).
    """

    reso_min: int = 20
    reso_max: int = 60
    reso_step: int = 10
    thr_factor: float = 2.8
    nn_factor: float = 1.0
    optimal_thr: bool = True
    robust: bool = False
    beta: float = 1.0
    min_area: int = 10
    guided: tuple[float, float] | None = (12.0, 0.04)


@dataclass(frozen=True)
class ContourSettings:
    """Active contours of ``extsfinder=ACTIVE-CONTOUR`` (spec 5.4; legacy names in brackets).

    Attributes
    ----------
    method
        ``CHANVESE`` or ``LRAC`` (``activecontour``).
    n_iters
        Most contour steps (``ac-niters``).
    init
        Initial contour: ``SALIENCY`` (the wavelet seeds), ``CIRCLE`` or ``CHECKERBOARD``
        (``ac-levelset``).
    init_size
        Circle radius or checkerboard square side over the smaller image side
        (``ac-levelsetsize``).
    tolerance
        Stop when fewer pixels than this fraction of the boundary change side in an outer
        iteration (``ac-tolerance``).
    cv_inner, cv_reinit
        Chan-Vese steps per outer iteration; re-initialisation every ``cv_reinit`` outer
        iterations, 0 = never (``cv-nitersinner``, ``cv-nitersreinit``).
    dt, h
        Time step and grid step (``cv-timestep``, ``cv-wsize``).
    lambda1, lambda2, mu, nu, p
        Weights of the inside and outside fits, of the length (to the power ``p``) and of
        the area (``cv-lambda1``, ``cv-lambda2``, ``cv-mu``, ``cv-nu``, ``cv-p``).
    """

    method: str = "CHANVESE"
    n_iters: int = 1000
    init: str = "SALIENCY"
    init_size: float = 0.1
    tolerance: float = 0.1
    cv_inner: int = 5
    cv_reinit: int = 5
    dt: float = 0.007
    h: float = 1.0
    lambda1: float = 1.0
    lambda2: float = 2.0
    mu: float = 0.5
    nu: float = 0.0
    p: float = 1.0


@dataclass(frozen=True)
class SuperpixelSettings:
    """Superpixel search of ``extsfinder=SP-HIERCLUST`` (spec 5.3); its SLIC regularisation
    and smallest region are the saliency search's (``sp-beta``, ``sp-minarea``).

    Attributes
    ----------
    size
        Superpixel size in full-image pixels (``sp-size``).
    """

    size: int = 20


@dataclass(frozen=True)
class FinderOptions:
    """Typed settings of the whole pipeline: one group per step, then the run, tiling and
    output settings (defaults: the legacy ``caesar`` app's, except ``extended.method``: the
    wavelet method, ``WT-THRESH``).

    Attributes
    ----------
    background, compact, selection, nested, fit, extended, saliency, contour, superpixel
        The settings of each step.
    nproc
        Worker processes for tiles (``nproc``).
    tile_split, tile_size, tile_step
        Tiling (``tilesplit``, ``tilesize`` (0 = automatic), ``tilestep``).
    auto_tile_above
        Images with more pixels than this on a side are tiled even without ``tile_split``.
    beam_fallback
        Beam ``(bmaj, bmin, bpa)`` in arcsec and degrees for images without one, or None.
    save_maps
        Maps to keep: ``input``, ``bkg``, ``rms``, ``significance``, ``residual``,
        ``saliency``, ``segmented`` (``save-*``).
    regions_wcs, region_frame
        Island regions in sky coordinates, in this frame (read by the ``caesar`` app).
    subimage
        ``(xmin, xmax, ymin, ymax)`` to read, or None (``read-subimg``).
    """

    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    compact: CompactSettings = field(default_factory=CompactSettings)
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    nested: NestedSettings = field(default_factory=NestedSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    extended: ExtendedSettings = field(default_factory=ExtendedSettings)
    saliency: SaliencySettings = field(default_factory=SaliencySettings)
    contour: ContourSettings = field(default_factory=ContourSettings)
    superpixel: SuperpixelSettings = field(default_factory=SuperpixelSettings)
    nproc: int = 1
    tile_split: bool = False
    tile_size: int = 0
    tile_step: float = 1.0
    auto_tile_above: int = 4096
    beam_fallback: tuple[float, float, float] | None = None
    save_maps: frozenset[str] = field(default_factory=frozenset)
    regions_wcs: bool = False
    region_frame: str = "J2000"
    subimage: tuple[int, int, int, int] | None = None

    def with_(self, **changes: Any) -> FinderOptions:
        """A copy with some fields changed; a step's group may be given as a mapping of its
        changed fields, e.g. ``opts.with_(fit={"enabled": True}, nproc=2)``.
        """
        resolved = {
            k: replace(getattr(self, k), **v) if isinstance(v, Mapping) else v
            for k, v in changes.items()
        }
        return replace(self, **resolved)


#: The steps' groups of :class:`FinderOptions`, by field name.
GROUPS: dict[str, type] = {
    "background": BackgroundSettings,
    "compact": CompactSettings,
    "selection": SelectionSettings,
    "nested": NestedSettings,
    "fit": FitSettings,
    "extended": ExtendedSettings,
    "saliency": SaliencySettings,
    "contour": ContourSettings,
    "superpixel": SuperpixelSettings,
}

_MAPS = ("input", "bkg", "rms", "significance", "residual", "saliency", "segmented")


def legacy_defaults() -> dict[str, Any]:
    """Every option (the predecessor's and the extensions) with its default (flags False).

    Returns
    -------
    dict
        Option name to default value.
    """
    return {o.name: (False if o.kind == "flag" else o.default) for o in ALL_OPTIONS}


# Builders of the settings that several options make together (the rows with how=PART):
# ``f(values, given)`` with every option's value (defaults filled in) and the given ones.
def _save_maps(v: Mapping[str, Any], given: Mapping[str, Any]) -> frozenset[str]:
    maps = {m for m in _MAPS if v[f"save-{m}map"]}
    return frozenset(_MAPS) if v["save-fits"] and not maps else frozenset(maps)


def _subimage(v: Mapping[str, Any], given: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    if not v["read-subimg"]:
        return None
    return int(v["xmin"]), int(v["xmax"]), int(v["ymin"]), int(v["ymax"])


def _beam(v: Mapping[str, Any], given: Mapping[str, Any]) -> tuple[float, float, float] | None:
    # The legacy defaults (10" x 5") are advertised but only applied when asked for: a
    # silent made-up beam would give wrong fluxes.
    if "bmaj" not in given and "bmin" not in given:
        return None
    bmaj = float(v["bmaj"])
    bmin = float(v["bmin"]) if "bmin" in given else bmaj
    if "bmaj" not in given:
        bmaj = bmin
    return bmaj, bmin, float(v["bpa"])


def _guided(v: Mapping[str, Any], given: Mapping[str, Any]) -> tuple[float, float] | None:
    if v["no-presmoothing"] or v["smoothfilter"] != "GUIDED":
        return None
    return float(v["guidedfilter-radius"]), float(v["guidedfilter-eps"])


def _at_least(name: str, low: int | str) -> Callable[[Mapping[str, Any], Mapping[str, Any]], int]:
    # An integer option raised to a floor: a constant or another option's value.
    def build(v: Mapping[str, Any], given: Mapping[str, Any]) -> int:
        return max(low if isinstance(low, int) else int(v[low]), int(v[name]))

    return build


def _fit_enabled(v: Mapping[str, Any], given: Mapping[str, Any]) -> bool:
    # Fitting is on by default (docs/compatibility.md); ``no-fitsources`` turns it off.
    return bool(v["fitsources"]) or not v["no-fitsources"]


def _skip_outliers(v: Mapping[str, Any], given: Mapping[str, Any]) -> bool:
    # On by default (the predecessor's template configuration; docs/compatibility.md).
    return bool(v["bkgskipoutliers"]) or not v["no-bkgskipoutliers"]


_BUILDERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], Any]] = {
    "fit.enabled": _fit_enabled,
    "background.skip_outliers": _skip_outliers,
    "save_maps": _save_maps,
    "subimage": _subimage,
    "beam_fallback": _beam,
    "saliency.guided": _guided,
    "compact.n_iters": _at_least("compactsearchiters", 1),
    "fit.max_components": _at_least("fit-maxcomponents", 1),
    "extended.wt_scale_max": _at_least("wtscalemax", "wtscalemin"),
    "saliency.reso_max": _at_least("saliency-maxreso", "saliency-minreso"),
}

_DEFAULT_OPTIONS = FinderOptions()


def _default_of(target: str) -> Any:
    """Default value of a setting (``"field"`` or ``"group.field"``)."""
    value: Any = _DEFAULT_OPTIONS
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _setting(o: LegacyOption, value: Any) -> Any:
    """The setting's value for an option's value (rows with how VALUE or NOT)."""
    if o.how == NOT:
        return not value
    # Converted to the type of the setting's default (a float bound of a limit, an int count).
    return type(_default_of(str(o.to)))(value)


def from_legacy(values: Mapping[str, Any]) -> FinderOptions:
    """Build :class:`FinderOptions` from legacy option values, row by row of the table.

    Parameters
    ----------
    values
        Legacy option names to values (already validated; absent or None = default).

    Returns
    -------
    FinderOptions
        The pipeline settings.

    Raises
    ------
    KeyError
        On an unknown option name.
    """
    unknown = sorted(set(values) - set(LEGACY_BY_NAME))
    if unknown:
        raise KeyError(f"unknown option(s): {', '.join(unknown)}")
    v = legacy_defaults()
    v.update({k: x for k, x in values.items() if x is not None})
    settings: dict[str, Any] = {}
    rows = [o for o in ALL_OPTIONS if o.to is not None and o.to != APP and o.how != PART]
    for o in rows:
        if o.how != OFF:
            settings[str(o.to)] = _setting(o, v[o.name])
    for o in rows:
        # After the values: a set "no limit" flag wins over the limit's value.
        if o.how == OFF and v[o.name]:
            settings[str(o.to)] = None
    for target, build in _BUILDERS.items():
        settings[target] = build(v, values)
    return _assemble(settings)


def _assemble(settings: Mapping[str, Any]) -> FinderOptions:
    """:class:`FinderOptions` from ``{"field" or "group.field": value}``."""
    groups: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    top: dict[str, Any] = {}
    for target, value in settings.items():
        group, _, name = target.rpartition(".")
        (groups[group] if group else top)[name] = value
    return FinderOptions(**top, **{g: GROUPS[g](**kw) for g, kw in groups.items()})


def setting_names() -> list[str]:
    """Every leaf setting of :class:`FinderOptions` (``"field"`` or ``"group.field"``).

    Returns
    -------
    list of str
        In declaration order.
    """
    out: list[str] = []
    for f in fields(FinderOptions):
        if f.name in GROUPS:
            out.extend(f"{f.name}.{g.name}" for g in fields(GROUPS[f.name]))
        else:
            out.append(f.name)
    return out


#: Options that act on some extended methods only, with those methods (``extsfinder``): the
#: effective ones of the smoothing category and of the saliency subcategory act on the saliency
#: search, the superpixel ones (``sp-*``) also on SP-HIERCLUST (``sp-size`` on it only), the
#: active-contour ones on ACTIVE-CONTOUR.
METHOD_ONLY: dict[str, frozenset[str]] = {
    **{
        o.name: frozenset({"SALIENCY-THRESH"})
        for o in LEGACY_OPTIONS
        if o.effective and (o.category == SMO or o.subcategory == SAL)
    },
    "sp-beta": frozenset({"SALIENCY-THRESH", "SP-HIERCLUST"}),
    "sp-minarea": frozenset({"SALIENCY-THRESH", "SP-HIERCLUST"}),
    "sp-size": frozenset({"SP-HIERCLUST"}),
    **{
        o.name: frozenset({"ACTIVE-CONTOUR"})
        for o in LEGACY_OPTIONS
        if o.subcategory == AC or o.name == "activecontour"
    },
}
#: Options that act on the saliency extended search only (``extsfinder=SALIENCY-THRESH``).
SALIENCY_ONLY = frozenset(k for k, v in METHOD_ONLY.items() if v == {"SALIENCY-THRESH"})


def ineffective_given(values: Mapping[str, Any]) -> list[str]:
    """Names of options without effect on this run that were given a non-default value.

    The accepted-only options, and the options of other extended methods than the chosen
    ``extsfinder`` (:data:`METHOD_ONLY`).

    Parameters
    ----------
    values
        Legacy option values.

    Returns
    -------
    list of str
        Sorted option names.
    """
    method = values.get("extsfinder") or LEGACY_BY_NAME["extsfinder"].default
    out = []
    for name, value in values.items():
        opt = LEGACY_BY_NAME.get(name)
        if opt is None or value is None:
            continue
        if opt.effective and method in METHOD_ONLY.get(name, {method}):
            continue
        default = False if opt.kind == "flag" else opt.default
        same = value == default or (
            isinstance(value, float)
            and isinstance(default, int | float)
            and math.isclose(value, float(default))
        )
        if not same:
            out.append(name)
    return sorted(out)
