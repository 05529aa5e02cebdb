"""Options of the source finder.

Two views of the same settings:

* :data:`LEGACY_OPTIONS` lists the 156 option names of the predecessor's ``caesar`` app (legacy
  documentation, appendix A) with their kind, default, bounds, category and "advanced" mark,
  plus whether this implementation honours them (``effective``); :data:`EXTENSION_OPTIONS`
  adds this implementation's own options with the same conventions. The ``caesar`` app builds
  its option schema from both (:data:`ALL_OPTIONS`).
* :class:`FinderOptions` holds the typed settings the pipeline reads. :func:`from_legacy` turns
  legacy ``name -> value`` pairs into it; defaults are the legacy app's defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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
) -> LegacyOption:
    return LegacyOption(name, kind, default, lo, hi, cat, sub, adv, eff, desc, values)


_F, _I, _R, _E = "flag", "int", "float", "enum"
_NA = "accepted for compatibility, no effect here: "

#: The predecessor's 156 options, in its order (legacy doc, appendix A).
# fmt: off
LEGACY_OPTIONS: tuple[LegacyOption, ...] = (
    # OUTPUT
    _o("save-fits", _F, None, None, None, OUT, "", False, True,
       "Write FITS maps (input, background, rms, significance, residual, saliency, segmented) "
       "as selected by the save-*map flags; alone it writes them all"),
    _o("save-inputmap", _F, None, None, None, OUT, "", False, True, "Write the input map"),
    _o("save-bkgmap", _F, None, None, None, OUT, "", False, True,
       "Write the background map (background.fits)"),
    _o("save-rmsmap", _F, None, None, None, OUT, "", False, True, "Write the rms map (rms.fits)"),
    _o("save-significancemap", _F, None, None, None, OUT, "", False, True,
       "Write the significance map (significance.fits)"),
    _o("save-residualmap", _F, None, None, None, OUT, "", False, True,
       "Write the residual map: image minus background minus fitted model (residual.fits)"),
    _o("save-saliencymap", _F, None, None, None, OUT, "", False, True,
       "Write the extended-source search map (saliency.fits: the wavelet significance, or the "
       "saliency map with extsfinder=SALIENCY-THRESH)"),
    _o("save-segmentedmap", _F, None, None, None, OUT, "", False, True,
       "Write the island label map (segmented.fits)"),
    _o("convertregionstowcs", _F, None, None, None, OUT, "", True, True,
       "Write island polygons (islands.reg) in sky coordinates instead of image pixels"),
    _o("regionwcs", _E, "J2000", None, None, OUT, "", True, True,
       "Sky frame of converted island regions", ("J2000", "B1950", "GALACTIC")),
    # IMGREAD
    _o("read-subimg", _F, None, None, None, READ, "", False, True,
       "Read only the sub-image xmin..xmax, ymin..ymax (pixels, 0-based, max exclusive)"),
    _o("xmin", _I, 0, -1000000, 1000000, READ, "", False, True, "Sub-image first column"),
    _o("xmax", _I, 0, -1000000, 1000000, READ, "", False, True,
       "Sub-image end column (exclusive; 0 = image width)"),
    _o("ymin", _I, 0, -1000000, 1000000, READ, "", False, True, "Sub-image first row"),
    _o("ymax", _I, 0, -1000000, 1000000, READ, "", False, True,
       "Sub-image end row (exclusive; 0 = image height)"),
    # IMGSTATS
    _o("no-parallelmedian", _F, None, None, None, STATS, "", True, False,
       _NA + "medians are always computed with NumPy"),
    # IMGBKG
    _o("bmaj", _R, 10.0, 0, 3600, BKG, "", True, True,
       "Beam major axis (arcsec), used only if the header has no beam and it is given"),
    _o("bmin", _R, 5.0, 0, 3600, BKG, "", True, True,
       "Beam minor axis (arcsec), used only if the header has no beam and it is given"),
    _o("bpa", _R, 0.0, 0, 180, BKG, "", True, True,
       "Beam position angle (deg), used only if the header has no beam"),
    _o("mappixsize", _R, 1.0, 0, 3600, BKG, "", True, False,
       _NA + "the pixel size always comes from the WCS"),
    _o("globalbkg", _F, None, None, None, BKG, "", False, True,
       "Use one global background and noise instead of local maps"),
    _o("bkgestimator", _E, "Median", None, None, BKG, "", False, True,
       "Background/noise estimator of each box", ("Mean", "Median", "BiWeight", "ClippedMedian")),
    _o("bkgboxpix", _F, None, None, None, BKG, "", False, True,
       "bkgbox is in pixels instead of beams"),
    _o("bkgbox", _R, 20.0, 0.01, 1000.0, BKG, "", False, True,
       "Background box size, in beams (or pixels with bkgboxpix)"),
    _o("bkggrid", _R, 0.2, 0.0, 1.0, BKG, "", False, True,
       "Background grid step as a fraction of the box"),
    _o("no-bkg2ndpass", _F, None, None, None, BKG, "", True, True,
       "Skip the second noise pass on the background-subtracted image"),
    _o("bkgskipoutliers", _F, None, None, None, BKG, "", True, True,
       "Mask detected sources and estimate the background again"),
    _o("sourcebkgboxborder", _I, 20, 0, 1000, BKG, "", True, True,
       "Border (pixels) of the per-source background box used by fit-usebkgboxestimate"),
    # COMPACT-SOURCES
    _o("no-compactsearch", _F, None, None, None, CMP, "", False, True,
       "Do not search compact sources"),
    _o("npixmin", _I, 5, 0, 10000, CMP, "", False, True, "Minimum pixels of an island"),
    _o("seedthr", _R, 5.0, 0, 10000, CMP, "", False, True,
       "Seed threshold (sigma above the local background)"),
    _o("mergethr", _R, 2.6, 0, 10000, CMP, "", False, True,
       "Merge (flood-fill) threshold (sigma)"),
    _o("compactsearchiters", _I, 1, 0, 100, CMP, "", False, True,
       "Number of compact search iterations (found sources masked, seed lowered)"),
    _o("seedthrstep", _R, 0.5, 0, 10, CMP, "", False, True,
       "Seed threshold decrease per iteration"),
    # SELECTION
    _o("selectsources", _F, None, None, None, CMP, SEL, False, True,
       "Apply the source selection and point-like tagging cuts"),
    _o("no-boundingboxcut", _F, None, None, None, CMP, SEL, False, True,
       "Do not remove line-like islands (minimum bounding box)"),
    _o("minboundingbox", _I, 2, 0, 1000000, CMP, SEL, False, True,
       "Minimum short side (pixels) of the island's minimum-area rectangle"),
    _o("no-circratiocut", _F, None, None, None, CMP, SEL, True, True,
       "Do not use circularity in point-like tagging"),
    _o("circratiothr", _R, 0.4, 0.0, 1.0, CMP, SEL, True, True,
       "Minimum circularity of point-like sources"),
    _o("no-elongationcut", _F, None, None, None, CMP, SEL, True, True,
       "Do not use elongation in point-like tagging"),
    _o("elongationthr", _R, 0.7, 0.0, 1.0, CMP, SEL, True, True,
       "Maximum elongation of point-like sources"),
    _o("ellipsearearatiocut", _F, None, None, None, CMP, SEL, True, True,
       "Use the moment-ellipse to pixel-area ratio in point-like tagging"),
    _o("ellipsearearatiominthr", _R, 0.6, 0.0, 10.0, CMP, SEL, True, True,
       "Minimum ellipse area ratio"),
    _o("ellipsearearatiomaxthr", _R, 1.4, 0.0, 10.0, CMP, SEL, True, True,
       "Maximum ellipse area ratio"),
    _o("maxnpixcut", _F, None, None, None, CMP, SEL, False, True,
       "Use a maximum pixel count in point-like tagging"),
    _o("maxnpix", _I, 1000, 0.0, 10000000, CMP, SEL, False, True,
       "Maximum pixels of point-like sources"),
    _o("no-nbeamscut", _F, None, None, None, CMP, SEL, False, True,
       "Do not use the number of beams in point-like tagging"),
    _o("nbeamsthr", _R, 3.0, 0.0, 1000.0, CMP, SEL, False, True,
       "Maximum number of beams of point-like sources"),
    # NESTED-SOURCES
    _o("no-nestedsearch", _F, None, None, None, CMP, NEST, False, True,
       "Do not search nested sources inside large islands"),
    _o("blobmaskmethod", _E, "MultiScaleLoG", None, None, CMP, NEST, False, True,
       "Blob detector of the nested search", ("GausLaplacian", "MultiScaleLoG")),
    _o("nested-sourcetobeamthr", _R, 5.0, 0.0, 1000000.0, CMP, NEST, False, True,
       "Search nested sources in islands larger than this many beams"),
    _o("nested-blobthr", _R, 0.0, 0.0, 100.0, CMP, NEST, True, True,
       "Blob response threshold as a multiple of the median positive response"),
    _o("nested-minmotherdist", _I, 2, 0, 100, CMP, NEST, True, True,
       "A single nested blob is kept if its centre is more than this (px) from the mother's"),
    _o("nested-maxmotherpixmatch", _R, 0.5, 0.0, 1.0, CMP, NEST, True, True,
       "... or if it covers less than this fraction of the mother"),
    _o("nested-blobpeakzthr", _R, 5.0, 0.0, 10000.0, CMP, NEST, False, True,
       "Peak significance of blobs in the blob-response map"),
    _o("nested-blobpeakzthrmerge", _R, 2.5, 0.0, 10000.0, CMP, NEST, False, True,
       "Flood-fill significance of blobs in the blob-response map"),
    _o("nested-blobminscale", _R, 1.0, 0.0, 10000.0, CMP, NEST, False, True,
       "Smallest blob scale, in beam FWHM"),
    _o("nested-blobmaxscale", _R, 3.0, 0.0, 10000.0, CMP, NEST, False, True,
       "Largest blob scale, in beam FWHM"),
    _o("nested-blobscalestep", _R, 1.0, 0.0, 10000.0, CMP, NEST, False, True,
       "Blob scale step (pixels of sigma)"),
    _o("nested-blobkernfactor", _R, 1.0, 0.0, 1000.0, CMP, NEST, True, True,
       "LoG kernel half-size in sigma (at least 3 is used, narrower kernels truncate the LoG)"),
    # FITTING
    _o("fitsources", _F, None, None, None, CMP, FIT, False, True,
       "Fit compact sources with multi-component 2-D Gaussians"),
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
       "Fit an island as a whole only if it spans at most this many beams"),
    _o("fit-maxcomponents", _I, 3, 0, 100, CMP, FIT, False, True,
       "Maximum Gaussian components per fitted source"),
    _o("fit-usenestedascomponents", _F, None, None, None, CMP, FIT, True, True,
       "Seed the components from the nested sources"),
    _o("fit-freebkg", _F, None, None, None, CMP, FIT, False, True,
       "Fit a free constant offset on top of the background map"),
    _o("fit-estimatedbkg", _F, None, None, None, CMP, FIT, False, False,
       _NA + "the estimated background map is always subtracted before fitting"),
    _o("fit-usebkgboxestimate", _F, None, None, None, CMP, FIT, False, True,
       "Subtract the per-source box background (median around the source) instead of the map"),
    _o("fit-bkg", _R, 0.0, -1000000.0, 1000000.0, CMP, FIT, False, False,
       _NA + "the estimated background map is always used"),
    _o("fit-ampllimit", _R, 0.3, 0.0, 2.0, CMP, FIT, False, True,
       "Amplitude bounds: start value times (1 +- limit)"),
    _o("prefit-freeampl", _F, None, None, None, CMP, FIT, True, False,
       _NA + "no pre-fit is needed by the Levenberg-Marquardt fitter"),
    _o("fit-sigmalimit", _R, 0.3, 0.0, 2.0, CMP, FIT, False, True,
       "Sigma bounds: start value times (1 +- limit)"),
    _o("fit-thetalimit", _R, 90.0, 0.0, 360.0, CMP, FIT, False, True,
       "Angle bounds: start value +- limit (deg)"),
    _o("fit-nobkglimits", _F, None, None, None, CMP, FIT, False, True,
       "No bounds on the free offset"),
    _o("fit-noampllimits", _F, None, None, None, CMP, FIT, False, True, "No amplitude bounds"),
    _o("fit-nosigmalimits", _F, None, None, None, CMP, FIT, False, True, "No sigma bounds"),
    _o("fit-noposlimits", _F, None, None, None, CMP, FIT, False, True,
       "No centroid bounds (besides the island bounding box)"),
    _o("fit-poslimit", _I, 3, 0, 1000, CMP, FIT, False, True,
       "Centroid bounds: start value +- limit (px)"),
    _o("prefit-freepos", _F, None, None, None, CMP, FIT, False, False,
       _NA + "no pre-fit is needed by the Levenberg-Marquardt fitter"),
    _o("fit-nothetalimits", _F, None, None, None, CMP, FIT, False, True, "No angle bounds"),
    _o("fit-fixsigma", _F, None, None, None, CMP, FIT, True, True,
       "Keep the component sigmas at their start values"),
    _o("prefit-fixsigma", _F, None, None, None, CMP, FIT, True, False,
       _NA + "no pre-fit is needed by the Levenberg-Marquardt fitter"),
    _o("fit-fixtheta", _F, None, None, None, CMP, FIT, True, True,
       "Keep the component angles at their start values"),
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
       "Minimum significance of secondary component peaks (at least seedthr is used)"),
    _o("fit-fcntol", _R, 0.01, 0.0, 100.0, CMP, FIT, True, True,
       "Convergence tolerance on the chi2 change (relative to the number of data points)"),
    _o("fit-maxniters", _I, 10000, 0, 1000000, CMP, FIT, True, True,
       "Maximum iterations per fit (capped at 200 here)"),
    _o("fit-noimproveconvergence", _F, None, None, None, CMP, FIT, True, True,
       "Do not widen bounds that a fitted parameter runs into"),
    _o("fit-noretry", _F, None, None, None, CMP, FIT, True, True,
       "Do not refit with fewer components after a failed fit"),
    _o("fit-nretries", _I, 10, 0, 100000, CMP, FIT, True, True,
       "Maximum bound widenings per fit (capped at 10 here)"),
    _o("fit-parboundincreasestep", _R, 0.1, 0.0, 10.0, CMP, FIT, True, True,
       "Bound widening step (fraction of the bound range)"),
    _o("fit-improveerrors", _F, None, None, None, CMP, FIT, True, False,
       _NA + "errors always come from the analytic Jacobian at the minimum"),
    _o("fit-scaledatatomax", _F, None, None, None, CMP, FIT, True, False,
       _NA + "fits are done in units of the local noise"),
    _o("fit-nochi2cut", _F, None, None, None, CMP, FIT, False, True,
       "Do not use the reduced chi2 in the fit quality"),
    _o("fit-chi2cut", _R, 5.0, 0.0, 1000.0, CMP, FIT, False, True,
       "Reduced chi2 below which a converged fit is of high quality"),
    _o("fit-useellipsecuts", _F, None, None, None, CMP, FIT, True, True,
       "Flag components whose ellipse differs much from the beam as fake"),
    # IMGRES
    _o("computeresiduals", _F, None, None, None, RES, "", False, False,
       _NA + "the extended search always runs on the image with compact sources removed"),
    _o("res-removenested", _F, None, None, None, RES, "", False, False,
       _NA + "compact islands above res-zthr are removed whole"),
    _o("res-zthr", _R, 5.0, 0.0, 10000.0, RES, "", False, True,
       "Compact islands peaking above this significance are removed before the extended "
       "search"),
    _o("res-zhighthr", _R, 10.0, 0.0, 10000.0, RES, "", False, False,
       _NA + "compact islands above res-zthr are removed whole"),
    _o("dilatekernsize", _I, 9, 1, 1001, RES, "", False, True,
       "Dilation kernel (px) around compact islands removed before the extended search"),
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
       "No smoothing of the saliency search image (the wavelet search smooths by construction)"),
    _o("smoothfilter", _E, "GUIDED", None, None, SMO, "", False, True,
       "Smoothing of the saliency search image: GUIDED (edge-preserving) or GAUSSIAN, which "
       "adds no smoothing here (the block means it runs on smooth more than a 5x5 blur)",
       ("GAUSSIAN", "GUIDED")),
    _o("guidedfilter-radius", _R, 12.0, 0.0, 1000.0, SMO, "", False, True,
       "Guided filter radius (px) for the saliency search"),
    _o("guidedfilter-eps", _R, 0.04, 0.0, 1000.0, SMO, "", False, True,
       "Guided filter regularisation (fraction of 255^2) for the saliency search"),
    # EXTENDED-SOURCES
    _o("no-extendedsearch", _F, None, None, None, EXT, "", False, True,
       "Do not search extended sources"),
    _o("extsfinder", _E, "WT-THRESH", None, None, EXT, "", False, True,
       "Extended-source method: WT-THRESH (wavelet, the default here) or SALIENCY-THRESH "
       "(multi-resolution saliency, the predecessor's default); SP-HIERCLUST and "
       "ACTIVE-CONTOUR are not implemented and run the wavelet method",
       ("WT-THRESH", "SP-HIERCLUST", "ACTIVE-CONTOUR", "SALIENCY-THRESH")),
    _o("activecontour", _E, "CHANVESE", None, None, EXT, "", False, False,
       _NA + "active contours are not implemented", ("CHANVESE", "LRAC")),
    _o("sp-size", _I, 20, 5, 10000, EXT, SAL, False, False,
       _NA + "superpixel size of the SP-HIERCLUST method, not implemented"),
    _o("sp-beta", _R, 1.0, 1e-10, 1e10, EXT, SAL, False, True,
       "Superpixel regularisation of the saliency search (SALIENCY-THRESH)"),
    _o("sp-minarea", _I, 10, 1, 10000, EXT, SAL, False, True,
       "Smallest superpixel, in pixels, of the saliency search (SALIENCY-THRESH)"),
    _o("saliency-nooptimalthr", _F, None, None, None, EXT, SAL, False, True,
       "Cut the saliency map at saliency-thr x median only (no Otsu/valley threshold)"),
    _o("saliency-thr", _R, 2.8, 0.0, 10.0, EXT, SAL, False, True,
       "Saliency threshold factor on the map's median (SALIENCY-THRESH)"),
    _o("saliency-minreso", _I, 20, 1, 1000, EXT, SAL, False, True,
       "Smallest superpixel size, in pixels, of the saliency resolutions"),
    _o("saliency-maxreso", _I, 60, 1, 1000, EXT, SAL, False, True,
       "Largest superpixel size, in pixels, of the saliency resolutions"),
    _o("saliency-resostep", _I, 10, 1, 100, EXT, SAL, False, True,
       "Step between the saliency resolutions, in pixels"),
    _o("saliency-nn", _R, 1.0, 0, 1.0, EXT, SAL, True, True,
       "Fraction of the regions averaged in a region's saliency score"),
    _o("saliency-usebkgmap", _F, None, None, None, EXT, SAL, True, False,
       _NA + "the background map is not added to the saliency map"),
    _o("saliency-usermsmap", _F, None, None, None, EXT, SAL, True, False,
       _NA + "the noise map is not added to the saliency map"),
    _o("saliency-userobustpars", _F, None, None, None, EXT, SAL, False, True,
       "Median instead of mean per superpixel in the saliency search"),
    _o("ac-niters", _I, 1000, 1, 100000, EXT, AC, False, False, _NA + "no active contours"),
    _o("ac-levelset", _E, "CIRCLE", None, None, EXT, AC, False, False,
       _NA + "no active contours", ("CIRCLE", "CHECKERBOARD", "SALIENCY")),
    *(
        _o(n, k, d, lo, hi, EXT, AC, adv, False, _NA + "no active contours")
        for n, k, d, lo, hi, adv in (
            ("ac-levelsetsize", _R, 0.1, 0.0, 1.0, False),
            ("ac-tolerance", _R, 0.1, 0.0, 1.0, False),
            ("cv-nitersinner", _I, 5, 0, 100000, True),
            ("cv-nitersreinit", _I, 5, 0, 100000, True),
            ("cv-timestep", _R, 0.007, 0.0, 1000.0, False),
            ("cv-wsize", _R, 1.0, 0.0, 1000.0, False),
            ("cv-lambda1", _R, 1.0, 0.0, 100.0, False),
            ("cv-lambda2", _R, 2.0, 0.0, 100.0, False),
            ("cv-mu", _R, 0.5, 0.0, 100.0, False),
            ("cv-nu", _R, 0.0, 0.0, 100.0, False),
            ("cv-p", _R, 1.0, 0.0, 100.0, False),
        )
    ),
    _o("wtscalemin", _I, 3, 1, 10, EXT, WT, False, True,
       "Smallest wavelet scale of the extended search (2**n px)"),
    _o("wtscalemax", _I, 6, 1, 10, EXT, WT, False, True,
       "Largest wavelet scale of the extended search"),
    # RUN
    _o("loglevel", _E, "INFO", None, None, RUN, "", False, True,
       "Log level of the job log", ("INFO", "DEBUG", "WARN", "ERROR", "OFF")),
    _o("no-logredir", _F, None, None, None, RUN, "", False, False,
       _NA + "the log always goes to the job log"),
    _o("no-mpi", _F, None, None, None, RUN, "", False, False,
       _NA + "tiles run in local processes (nproc)"),
    _o("nproc", _I, 1, 1, 1000, RUN, "", False, True,
       "Number of worker processes for tiles (large images are tiled automatically)"),
    _o("nthreads", _I, 1, -1, 1000, RUN, "", False, False,
       _NA + "NumPy kernels are single-threaded; use nproc"),
    _o("tilesplit", _F, None, None, None, RUN, "", False, True,
       "Split the image into tiles (overlapping, merged at the edges)"),
    _o("tilesize", _I, 0, 0.0, 10000000.0, RUN, "", False, True,
       "Tile size in pixels (0 = automatic)"),
    _o("tilestep", _R, 1.0, 0.001, 1.0, RUN, "", False, True,
       "Tile step as a fraction of the tile size; below 1 widens the overlap"),
    _o("mergeedgesources", _F, None, None, None, RUN, "", False, False,
       _NA + "sources on tile edges are always merged"),
    _o("no-mergesources", _F, None, None, None, RUN, "", False, True,
       "Do not merge touching compact and extended sources"),
)

#: Options of this implementation that the predecessor did not have (same conventions).
EXTENSION_OPTIONS: tuple[LegacyOption, ...] = (
    _o("fit-nopointmodel", _F, None, None, None, CMP, FIT, True, True,
       "Keep the free-shape fit of every single component (by default one whose shape the "
       "data do not constrain takes the beam's shape: its flux is then the fitted peak)"),
    _o("fit-pointmodelthr", _R, 11.34, 0.0, 1000000.0, CMP, FIT, True, True,
       "Effective chi2 gain of the free shape (3 parameters, beam-correlated noise) below "
       "which the beam-shaped model is kept; 11.34 is the 99th percentile for a point source"),
)
# fmt: on

#: Every option of the ``caesar`` app: the predecessor's, then the extensions.
ALL_OPTIONS: tuple[LegacyOption, ...] = LEGACY_OPTIONS + EXTENSION_OPTIONS
LEGACY_BY_NAME: dict[str, LegacyOption] = {o.name: o for o in ALL_OPTIONS}

BKG_ESTIMATORS: dict[str, int] = {"Mean": 1, "Median": 2, "BiWeight": 3, "ClippedMedian": 4}
SOURCE_TYPES: dict[str, int] = {"ALL": -1, "COMPACT": 1, "POINT-LIKE": 2, "EXTENDED": 3}

#: Upper limits on loop counts that are impractical in Python (documented deviations).
MAX_FIT_ITERS = 200
MAX_FIT_WIDENINGS = 10


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
class FinderOptions:
    """Typed settings of the whole pipeline (defaults: the legacy ``caesar`` app's, except
    ``ext_method``: the wavelet method, ``WT-THRESH``).

    Only the most used fields are documented here; each maps to the legacy option named in its
    comment (see :data:`LEGACY_OPTIONS` and ``docs/sourcefinder.md``).
    """

    # Background (bkg*, globalbkg, no-bkg2ndpass, bkgskipoutliers)
    local_bkg: bool = True
    bkg_estimator: str = "Median"
    bkg_box: float = 20.0
    bkg_box_in_beams: bool = True
    bkg_grid: float = 0.2
    bkg_second_pass: bool = True
    bkg_skip_outliers: bool = False
    source_bkg_box_border: int = 20
    # Compact search
    search_compact: bool = True
    min_npix: int = 5
    seed_thr: float = 5.0
    merge_thr: float = 2.6
    n_iters: int = 1
    seed_thr_step: float = 0.5
    # Selection
    select_sources: bool = False
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
    # Nested search
    search_nested: bool = True
    blob_method: str = "MultiScaleLoG"
    nested_beams_thr: float = 5.0
    nested_blob_thr: float = 0.0
    nested_min_mother_dist: float = 2.0
    nested_max_pix_match: float = 0.5
    nested_peak_zthr: float = 5.0
    nested_merge_zthr: float = 2.5
    nested_min_scale: float = 1.0
    nested_max_scale: float = 3.0
    nested_scale_step: float = 1.0
    nested_kern_factor: float = 1.0
    # Fitting
    fit_sources: bool = False
    fit_max_nbeams: float = 20.0
    fit_max_components: int = 3
    fit_use_nested: bool = False
    fit_free_bkg: bool = False
    fit_bkg_box: bool = False
    fit_ampl_limit: float | None = 0.3
    fit_sigma_limit: float | None = 0.3
    fit_theta_limit_deg: float | None = 90.0
    fit_pos_limit: float | None = 3.0
    fit_bkg_limits: bool = True
    fit_fix_sigma: bool = False
    fit_fix_theta: bool = False
    fit_peak_zthr: float = 1.0
    fit_tol: float = 0.01
    fit_max_iters: int = 10000
    fit_widen_bounds: bool = True
    fit_retry: bool = True
    fit_n_retries: int = 10
    fit_bound_step: float = 0.1
    fit_chi2_cut: float | None = 5.0
    #: Point-model test threshold (None: keep every free-shape fit).
    fit_point_model_thr: float | None = 11.34
    fit_ellipse_cuts: bool = False
    # Residuals
    compute_residuals: bool = False
    res_remove_nested: bool = False
    res_zthr: float = 5.0
    res_zhigh_thr: float = 10.0
    dilate_size: int = 9
    res_removed_type: str = "POINT-LIKE"
    res_method: str = "DILATION"
    # Extended
    search_extended: bool = True
    ext_method: str = "WT-THRESH"
    wt_scale_min: int = 3
    wt_scale_max: int = 6
    #: The saliency search (``ext_method`` SALIENCY-THRESH).
    saliency: SaliencySettings = field(default_factory=SaliencySettings)
    merge_sources: bool = True
    # Run and tiling
    nproc: int = 1
    tile_split: bool = False
    tile_size: int = 0
    tile_step: float = 1.0
    #: Images with more pixels than this on a side are tiled even without ``tile_split``.
    auto_tile_above: int = 4096
    # Beam fallback (arcsec, deg); None = no fallback
    beam_fallback: tuple[float, float, float] | None = None
    # Output maps
    save_maps: frozenset[str] = field(default_factory=frozenset)
    regions_wcs: bool = False
    region_frame: str = "J2000"
    subimage: tuple[int, int, int, int] | None = None

    def with_(self, **changes: Any) -> FinderOptions:
        """A copy with some fields changed."""
        return replace(self, **changes)


FIELD_NAMES = frozenset(f.name for f in fields(FinderOptions))

_MAPS = ("input", "bkg", "rms", "significance", "residual", "saliency", "segmented")


def legacy_defaults() -> dict[str, Any]:
    """Every option (the predecessor's and the extensions) with its default (flags False).

    Returns
    -------
    dict
        Option name to default value.
    """
    return {o.name: (False if o.kind == "flag" else o.default) for o in ALL_OPTIONS}


def from_legacy(values: Mapping[str, Any]) -> FinderOptions:
    """Build :class:`FinderOptions` from legacy option values.

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

    def lim(flag: str, name: str) -> float | None:
        return None if v[flag] else float(v[name])

    maps = {m for m in _MAPS if v[f"save-{m}map" if m != "bkg" else "save-bkgmap"]}
    if v["save-fits"] and not maps:
        maps = set(_MAPS)
    beam: tuple[float, float, float] | None = None
    if "bmaj" in values or "bmin" in values:
        # The legacy defaults (10" x 5") are advertised but only applied when asked for: a
        # silent made-up beam would give wrong fluxes.
        bmaj = float(v["bmaj"])
        bmin = float(v["bmin"]) if "bmin" in values else bmaj
        if "bmaj" not in values:
            bmaj = bmin
        beam = (bmaj, bmin, float(v["bpa"]))
    sub: tuple[int, int, int, int] | None = None
    if v["read-subimg"]:
        sub = (int(v["xmin"]), int(v["xmax"]), int(v["ymin"]), int(v["ymax"]))
    return FinderOptions(
        local_bkg=not v["globalbkg"],
        bkg_estimator=str(v["bkgestimator"]),
        bkg_box=float(v["bkgbox"]),
        bkg_box_in_beams=not v["bkgboxpix"],
        bkg_grid=float(v["bkggrid"]),
        bkg_second_pass=not v["no-bkg2ndpass"],
        bkg_skip_outliers=bool(v["bkgskipoutliers"]),
        source_bkg_box_border=int(v["sourcebkgboxborder"]),
        search_compact=not v["no-compactsearch"],
        min_npix=int(v["npixmin"]),
        seed_thr=float(v["seedthr"]),
        merge_thr=float(v["mergethr"]),
        n_iters=max(1, int(v["compactsearchiters"])),
        seed_thr_step=float(v["seedthrstep"]),
        select_sources=bool(v["selectsources"]),
        use_bbox_cut=not v["no-boundingboxcut"],
        min_bbox=float(v["minboundingbox"]),
        use_circ_cut=not v["no-circratiocut"],
        circ_thr=float(v["circratiothr"]),
        use_elong_cut=not v["no-elongationcut"],
        elong_thr=float(v["elongationthr"]),
        use_ellipse_area_cut=bool(v["ellipsearearatiocut"]),
        ellipse_area_min=float(v["ellipsearearatiominthr"]),
        ellipse_area_max=float(v["ellipsearearatiomaxthr"]),
        use_max_npix_cut=bool(v["maxnpixcut"]),
        max_npix=int(v["maxnpix"]),
        use_nbeams_cut=not v["no-nbeamscut"],
        nbeams_thr=float(v["nbeamsthr"]),
        search_nested=not v["no-nestedsearch"],
        blob_method=str(v["blobmaskmethod"]),
        nested_beams_thr=float(v["nested-sourcetobeamthr"]),
        nested_blob_thr=float(v["nested-blobthr"]),
        nested_min_mother_dist=float(v["nested-minmotherdist"]),
        nested_max_pix_match=float(v["nested-maxmotherpixmatch"]),
        nested_peak_zthr=float(v["nested-blobpeakzthr"]),
        nested_merge_zthr=float(v["nested-blobpeakzthrmerge"]),
        nested_min_scale=float(v["nested-blobminscale"]),
        nested_max_scale=float(v["nested-blobmaxscale"]),
        nested_scale_step=float(v["nested-blobscalestep"]),
        nested_kern_factor=float(v["nested-blobkernfactor"]),
        fit_sources=bool(v["fitsources"]),
        fit_max_nbeams=float(v["fit-maxnbeams"]),
        fit_max_components=max(1, int(v["fit-maxcomponents"])),
        fit_use_nested=bool(v["fit-usenestedascomponents"]),
        fit_free_bkg=bool(v["fit-freebkg"]),
        fit_bkg_box=bool(v["fit-usebkgboxestimate"]),
        fit_ampl_limit=lim("fit-noampllimits", "fit-ampllimit"),
        fit_sigma_limit=lim("fit-nosigmalimits", "fit-sigmalimit"),
        fit_theta_limit_deg=lim("fit-nothetalimits", "fit-thetalimit"),
        fit_pos_limit=lim("fit-noposlimits", "fit-poslimit"),
        fit_bkg_limits=not v["fit-nobkglimits"],
        fit_fix_sigma=bool(v["fit-fixsigma"]),
        fit_fix_theta=bool(v["fit-fixtheta"]),
        fit_peak_zthr=float(v["fit-peakzthrmin"]),
        fit_tol=float(v["fit-fcntol"]),
        fit_max_iters=int(v["fit-maxniters"]),
        fit_widen_bounds=not v["fit-noimproveconvergence"],
        fit_retry=not v["fit-noretry"],
        fit_n_retries=int(v["fit-nretries"]),
        fit_bound_step=float(v["fit-parboundincreasestep"]),
        fit_chi2_cut=None if v["fit-nochi2cut"] else float(v["fit-chi2cut"]),
        fit_point_model_thr=None if v["fit-nopointmodel"] else float(v["fit-pointmodelthr"]),
        fit_ellipse_cuts=bool(v["fit-useellipsecuts"]),
        compute_residuals=bool(v["computeresiduals"]),
        res_remove_nested=bool(v["res-removenested"]),
        res_zthr=float(v["res-zthr"]),
        res_zhigh_thr=float(v["res-zhighthr"]),
        dilate_size=int(v["dilatekernsize"]),
        res_removed_type=str(v["res-removedsourcetype"]),
        res_method=str(v["res-pssubtractionmethod"]),
        search_extended=not v["no-extendedsearch"],
        ext_method=str(v["extsfinder"]),
        wt_scale_min=int(v["wtscalemin"]),
        wt_scale_max=max(int(v["wtscalemin"]), int(v["wtscalemax"])),
        saliency=SaliencySettings(
            reso_min=int(v["saliency-minreso"]),
            reso_max=max(int(v["saliency-minreso"]), int(v["saliency-maxreso"])),
            reso_step=int(v["saliency-resostep"]),
            thr_factor=float(v["saliency-thr"]),
            nn_factor=float(v["saliency-nn"]),
            optimal_thr=not v["saliency-nooptimalthr"],
            robust=bool(v["saliency-userobustpars"]),
            beta=float(v["sp-beta"]),
            min_area=int(v["sp-minarea"]),
            guided=(
                (float(v["guidedfilter-radius"]), float(v["guidedfilter-eps"]))
                if not v["no-presmoothing"] and v["smoothfilter"] == "GUIDED"
                else None
            ),
        ),
        merge_sources=not v["no-mergesources"],
        nproc=int(v["nproc"]),
        tile_split=bool(v["tilesplit"]),
        tile_size=int(v["tilesize"]),
        tile_step=float(v["tilestep"]),
        beam_fallback=beam,
        save_maps=frozenset(maps),
        regions_wcs=bool(v["convertregionstowcs"]),
        region_frame=str(v["regionwcs"]),
        subimage=sub,
    )


#: Options that act on the saliency extended search only (``extsfinder=SALIENCY-THRESH``):
#: the effective ones of the smoothing category and of the saliency subcategory.
SALIENCY_ONLY = frozenset(
    o.name for o in LEGACY_OPTIONS if o.effective and (o.category == SMO or o.subcategory == SAL)
)


def ineffective_given(values: Mapping[str, Any]) -> list[str]:
    """Names of options without effect on this run that were given a non-default value.

    The accepted-only options, and the saliency-search options (:data:`SALIENCY_ONLY`) when
    ``extsfinder`` is not ``SALIENCY-THRESH``.

    Parameters
    ----------
    values
        Legacy option values.

    Returns
    -------
    list of str
        Sorted option names.
    """
    out = []
    for name, value in values.items():
        opt = LEGACY_BY_NAME.get(name)
        if opt is None or value is None:
            continue
        if opt.effective and not (
            name in SALIENCY_ONLY and values.get("extsfinder") != "SALIENCY-THRESH"
        ):
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
