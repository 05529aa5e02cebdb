"""The one catalogue schema every app writes.

Each column has a name, a NumPy dtype, an astropy unit string (empty for dimensionless) and an
IVOA UCD, so that VOTables open in TOPCAT with units and meaning attached. Pixel coordinates are
0-based (NumPy convention), sizes are FWHM in arcsec, position angles are degrees east of north.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One catalogue column."""

    name: str
    dtype: str
    unit: str
    ucd: str
    description: str


#: Catalogue columns in output order.
COLUMNS: tuple[Column, ...] = (
    Column("name", "U32", "", "meta.id;meta.main", "IAU-style source name"),
    Column(
        "island_id", "i8", "", "meta.id.parent", "Island (connected region) the source belongs to"
    ),
    Column("component_id", "i8", "", "meta.id", "Component number within its island (0-based)"),
    Column("x", "f8", "pix", "pos.cartesian.x;instr.det", "Centroid x, 0-based pixel"),
    Column("y", "f8", "pix", "pos.cartesian.y;instr.det", "Centroid y, 0-based pixel"),
    Column("x_err", "f8", "pix", "stat.error;pos.cartesian.x", "Error on x"),
    Column("y_err", "f8", "pix", "stat.error;pos.cartesian.y", "Error on y"),
    Column("ra", "f8", "deg", "pos.eq.ra;meta.main", "Right ascension (ICRS/FK5 J2000)"),
    Column("dec", "f8", "deg", "pos.eq.dec;meta.main", "Declination (ICRS/FK5 J2000)"),
    Column("ra_err", "f8", "arcsec", "stat.error;pos.eq.ra", "Error on ra"),
    Column("dec_err", "f8", "arcsec", "stat.error;pos.eq.dec", "Error on dec"),
    Column("peak_flux", "f8", "Jy/beam", "phot.flux.density;stat.max", "Peak surface brightness"),
    Column("peak_flux_err", "f8", "Jy/beam", "stat.error;phot.flux.density", "Error on peak_flux"),
    Column("flux", "f8", "Jy", "phot.flux.density", "Integrated flux density"),
    Column("flux_err", "f8", "Jy", "stat.error;phot.flux.density", "Error on flux"),
    Column("maj", "f8", "arcsec", "phys.angSize.smajAxis", "Major axis FWHM"),
    Column("maj_err", "f8", "arcsec", "stat.error;phys.angSize.smajAxis", "Error on maj"),
    Column("min", "f8", "arcsec", "phys.angSize.sminAxis", "Minor axis FWHM"),
    Column("min_err", "f8", "arcsec", "stat.error;phys.angSize.sminAxis", "Error on min"),
    Column("pa", "f8", "deg", "pos.posAng", "Position angle of the major axis, east of north"),
    Column("pa_err", "f8", "deg", "stat.error;pos.posAng", "Error on pa"),
    Column("local_rms", "f8", "Jy/beam", "stat.stdev;phot.flux.density", "Local noise at the peak"),
    Column("local_bkg", "f8", "Jy/beam", "phot.flux.density;instr.background", "Local background"),
    Column("snr", "f8", "", "stat.snr", "Peak signal-to-noise ratio"),
    Column("flags", "i8", "", "meta.code.qual", "Bit flags (see FLAG_* constants)"),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)

#: Flag bits.
FLAG_BLENDED = 1  # the source shares its island with others (deblended)
FLAG_TRUNCATED = 2  # the island touches the image border or a blank region
FLAG_FIT_FAILED = 4  # a model fit did not converge; moments were used
FLAG_EXTENDED = 8  # the source is resolved / extended

#: Classes of the classifier (:mod:`caesar_rest.classify`), in the order of the documentation
#: and of the preview legend.
CLASSES: tuple[str, ...] = (
    "compact",
    "extended",
    "extended-multisland",
    "spurious",
    "flagged",
    "diffuse",
)

#: Columns the classifier adds to every app's catalogue (``classify``, on by default); the
#: classes are those of :data:`CLASSES`.
CLASS_COLUMNS: tuple[Column, ...] = (
    Column(
        "class",
        "U19",
        "",
        "src.class",
        "Source class: compact, extended, extended-multisland, spurious, flagged or diffuse",
    ),
    Column("class_score", "f8", "", "stat.probability", "Classifier score of the class (0-1)"),
    Column(
        "group_id",
        "i8",
        "",
        "meta.id.parent",
        "Multi-island object of the row: rows of class extended-multisland that form one "
        "source (core and lobes) share a number 1, 2, ...; -1 for rows of other classes",
    ),
)
#: ``group_id`` of a row in no multi-island object.
NO_GROUP = -1
