"""Build catalogue tables in the shared schema and write them as VOTable, CSV, JSON and DS9.

Every writer takes a table made by :func:`make_table` (all :data:`COLUMNS`, in order, with
dtype, unit, UCD and description), so the files of every app look the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import astropy.units as u
import numpy as np
import numpy.typing as npt
from astropy.io.votable import from_table
from astropy.io.votable import writeto as votable_writeto
from astropy.io.votable.tree import CooSys, Info, Param
from astropy.table import Table

from caesar_rest.catalogue.schema import CLASS_COLUMNS, COLUMN_NAMES, COLUMNS, NO_GROUP, Column

_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}

RowsOrColumns: TypeAlias = Mapping[str, Any] | Sequence[Mapping[str, Any]] | Table | None


def _fill_value(col: Column) -> Any:
    kind = np.dtype(col.dtype).kind
    if kind == "f":
        return math.nan
    if kind in "iu":
        return 0
    return ""


def _column_values(col: Column, values: Any, nrows: int) -> npt.NDArray[Any]:
    dtype = np.dtype(col.dtype)
    if values is None:
        return np.full(nrows, _fill_value(col), dtype=dtype)
    if isinstance(values, np.ma.MaskedArray):  # CSV/VOTable blanks come back masked
        values = values.filled(_fill_value(col))
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = np.full(nrows, arr.item())
    fill = _fill_value(col)
    if dtype.kind == "U":
        arr = np.array([fill if v is None else str(v) for v in arr.tolist()], dtype=dtype)
    elif arr.dtype == object:  # rows may hold None (e.g. JSON null) for missing values
        arr = np.array([fill if v is None else v for v in arr.tolist()], dtype=dtype)
    else:
        arr = arr.astype(dtype)
    if arr.shape != (nrows,):
        raise ValueError(f"column {col.name!r} has {arr.size} values, expected {nrows}")
    return arr


def make_table(rows_or_columns: RowsOrColumns = None) -> Table:
    """Make a catalogue table with every schema column, in order, with units and UCDs.

    Parameters
    ----------
    rows_or_columns
        A mapping of column name to values (arrays or scalars), a sequence of row mappings, an
        existing :class:`~astropy.table.Table`, or None for an empty catalogue. Columns not given
        are filled with NaN (floats), 0 (integers) or ``""`` (names).

    Returns
    -------
    astropy.table.Table
        The table; each column carries ``unit``, ``description`` and ``meta['ucd']`` (the key
        astropy's VOTable writer turns into the FIELD ``ucd`` attribute).

    Raises
    ------
    ValueError
        On a column name that is not in the schema, or columns of different lengths.
    """
    columns: dict[str, Any]
    if rows_or_columns is None:
        columns, nrows = {}, 0
    elif isinstance(rows_or_columns, Table):
        columns = {name: rows_or_columns[name] for name in rows_or_columns.colnames}
        nrows = len(rows_or_columns)
    elif isinstance(rows_or_columns, Mapping):
        columns = dict(rows_or_columns)
        lengths = {np.size(v) for v in columns.values() if v is not None and np.ndim(v) > 0}
        if len(lengths) > 1:
            raise ValueError(f"columns have different lengths: {sorted(lengths)}")
        nrows = lengths.pop() if lengths else (1 if columns else 0)
    else:
        rows = list(rows_or_columns)
        names = {k for row in rows for k in row}
        columns = {n: [row.get(n) for row in rows] for n in names}
        nrows = len(rows)
    unknown = sorted(set(columns) - set(COLUMN_NAMES))
    if unknown:
        raise ValueError(f"unknown catalogue column(s): {', '.join(unknown)}")
    table = Table()
    for col in COLUMNS:
        table[col.name] = _column_values(col, columns.get(col.name), nrows)
        table[col.name].unit = u.Unit(col.unit) if col.unit else None
        table[col.name].description = col.description
        table[col.name].meta["ucd"] = col.ucd
    return table


def iau_name(ra_deg: float, dec_deg: float, prefix: str = "", ra_decimals: int = 1) -> str:
    """IAU-style name ``[PREFIX ]JHHMMSS.s+DDMMSS`` (coordinates truncated, not rounded).

    Parameters
    ----------
    ra_deg, dec_deg
        J2000 coordinates in degrees.
    prefix
        Survey or catalogue acronym, e.g. ``"CRS"``; separated from the name by a space.
    ra_decimals
        Decimals of the RA seconds (0 gives ``J163512-472811``). One decimal (1.5 arcsec at the
        equator) keeps names of neighbouring sources distinct at arcsec resolution.

    Returns
    -------
    str
        The name, or ``""`` for non-finite coordinates.
    """
    if not (math.isfinite(ra_deg) and math.isfinite(dec_deg)):
        return ""
    scale = 10**ra_decimals
    # Work in integer units of the last digit so truncation never yields "60" seconds.
    ticks = int(math.floor((ra_deg % 360.0) / 15.0 * 3600.0 * scale + 1e-9))
    ticks %= 24 * 3600 * scale
    hh, rest = divmod(ticks, 3600 * scale)
    mm, ss_ticks = divmod(rest, 60 * scale)
    ss = f"{ss_ticks // scale:02d}" + (f".{ss_ticks % scale:0{ra_decimals}d}" if scale > 1 else "")
    sign = "-" if dec_deg < 0 else "+"
    arcsec = int(math.floor(abs(dec_deg) * 3600.0 + 1e-9))
    dd, rest = divmod(arcsec, 3600)
    dm, ds = divmod(rest, 60)
    name = f"J{hh:02d}{mm:02d}{ss}{sign}{dd:02d}{dm:02d}{ds:02d}"
    return f"{prefix} {name}" if prefix else name


def iau_names(
    ra_deg: Iterable[float], dec_deg: Iterable[float], prefix: str = "", unique: bool = True
) -> list[str]:
    """Names for many sources, made unique with ``_2``, ``_3``... suffixes when they collide.

    Parameters
    ----------
    ra_deg, dec_deg
        J2000 coordinates in degrees.
    prefix
        As for :func:`iau_name`.
    unique
        Whether to add suffixes to repeated names.

    Returns
    -------
    list of str
        One name per source.
    """
    names = [iau_name(float(r), float(d), prefix) for r, d in zip(ra_deg, dec_deg, strict=True)]
    if not unique:
        return names
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def with_group_column(table: Table) -> Table:
    """The catalogue with a ``group_id`` column when it has classes but no groups.

    A catalogue classified elsewhere (an external program's objects, each a whole object with
    its own mask) gets one group per ``extended-multisland`` row and
    :data:`~caesar_rest.catalogue.schema.NO_GROUP` for the other rows, so that every classified
    catalogue has the same columns.

    Parameters
    ----------
    table
        A catalogue.

    Returns
    -------
    astropy.table.Table
        ``table`` itself when it has no ``class`` column or has ``group_id``; else a copy (the
        data shared) with ``group_id`` added after the other class columns.
    """
    if "class" not in table.colnames or "group_id" in table.colnames:
        return table
    multi = np.asarray(table["class"]).astype(str) == "extended-multisland"
    groups = np.where(multi, np.cumsum(multi), NO_GROUP).astype(np.int64)
    out = table.copy(copy_data=False)
    col = next(c for c in CLASS_COLUMNS if c.name == "group_id")
    out[col.name] = groups
    out[col.name].description = col.description
    out[col.name].meta["ucd"] = col.ucd
    return out


def write_csv(table: Table, path: str | Path) -> Path:
    """Write the catalogue as CSV (one header line with the column names).

    Parameters
    ----------
    table
        A table from :func:`make_table`.
    path
        Output file (overwritten).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    table.write(path, format="ascii.csv", overwrite=True)
    return path


def read_catalogue_csv(path: str | Path) -> Table:
    """Read a catalogue CSV written by :func:`write_csv` back into the schema.

    Parameters
    ----------
    path
        The CSV file.

    Returns
    -------
    astropy.table.Table
        A table as made by :func:`make_table` (dtypes, units, UCDs restored).
    """
    raw = Table.read(Path(path), format="ascii.csv", guess=False)
    missing = [n for n in COLUMN_NAMES if n not in raw.colnames]
    if missing:
        raise ValueError(f"{path}: missing catalogue column(s): {', '.join(missing)}")
    columns: dict[str, Any] = {}
    for col in COLUMNS:
        values = raw[col.name]
        if np.dtype(col.dtype).kind == "U":
            # An all-empty column is read as masked/int; names must stay strings.
            filled = values.filled("") if hasattr(values, "filled") else values
            columns[col.name] = ["" if v is np.ma.masked else str(v) for v in filled.tolist()]
        else:
            columns[col.name] = np.asarray(
                values.filled(_fill_value(col)) if hasattr(values, "filled") else values
            )
    if len(raw) == 0:
        return make_table(None)
    return make_table(columns)


#: Above this many rows VOTables are written in BINARY (astropy's TABLEDATA writer takes
#: about 0.35 ms per row; BINARY is ~4x faster). Both read the same in TOPCAT and astropy.
VOTABLE_TABLEDATA_MAX_ROWS = 10_000


@dataclass(frozen=True)
class VOTableParam:
    """A numeric PARAM of the catalogue's RESOURCE (e.g. the beam or the image rms)."""

    name: str
    value: float
    unit: str
    ucd: str
    description: str


@dataclass(frozen=True)
class VOTableMeta:
    """What a VOTable says about its catalogue besides the rows.

    Attributes
    ----------
    system
        COOSYS ``system`` of the ``ra``/``dec`` fields: ``ICRS`` or ``eq_FK5``.
    equinox
        COOSYS ``equinox`` (``J2000`` for FK5), or None.
    infos
        ``(name, value)`` INFO elements (provenance: app, versions, options, input file).
    params
        PARAM elements; non-finite values are left out.
    """

    system: str = "ICRS"
    equinox: str | None = None
    infos: tuple[tuple[str, str], ...] = ()
    params: tuple[VOTableParam, ...] = ()


#: ID of the COOSYS element the ``ra``/``dec`` FIELDs refer to.
COOSYS_ID = "coosys"


def write_votable(
    table: Table,
    path: str | Path,
    tabledata_format: str | None = None,
    meta: VOTableMeta | None = None,
) -> Path:
    """Write the catalogue as a VOTable whose FIELDs carry unit, ucd and description.

    Parameters
    ----------
    table
        A table from :func:`make_table`.
    path
        Output file (overwritten).
    tabledata_format
        ``"tabledata"`` (readable XML), ``"binary"`` or ``"binary2"``; by default TABLEDATA up
        to :data:`VOTABLE_TABLEDATA_MAX_ROWS` rows and BINARY beyond.
    meta
        COOSYS (referenced by the ``ra`` and ``dec`` FIELDs), INFO and PARAM elements of the
        RESOURCE; by default an ICRS COOSYS and nothing else.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    if tabledata_format is None:
        tabledata_format = "tabledata" if len(table) <= VOTABLE_TABLEDATA_MAX_ROWS else "binary"
    meta = meta or VOTableMeta()
    votable = from_table(table)
    resource = votable.resources[0]
    resource.coordinate_systems.append(
        CooSys(ID=COOSYS_ID, system=meta.system, equinox=meta.equinox)
    )
    for fld in resource.tables[0].fields:
        if fld.name in ("ra", "dec"):
            fld.ref = COOSYS_ID
    for name, value in meta.infos:
        resource.infos.append(Info(name=name, value=value))
    for par in meta.params:
        if math.isfinite(par.value):
            param = Param(
                votable,
                name=par.name,
                datatype="double",
                value=float(par.value),
                unit=par.unit or None,
                ucd=par.ucd,
            )
            param.description = par.description
            resource.params.append(param)
    votable_writeto(votable, str(path), tabledata_format=tabledata_format)
    return path


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def table_to_json(table: Table) -> dict[str, Any]:
    """The JSON document written by :func:`write_json`, as Python objects.

    Parameters
    ----------
    table
        A table from :func:`make_table`.

    Returns
    -------
    dict
        ``{"columns": [{name, unit, ucd, description}], "sources": [{column: value}]}``, with
        NaN as None; the schema's columns, then ``class``, ``class_score`` and ``group_id``
        when the table has them.
    """
    present = [*COLUMNS, *(c for c in CLASS_COLUMNS if c.name in table.colnames)]
    columns = [
        {"name": c.name, "unit": c.unit, "ucd": c.ucd, "description": c.description}
        for c in present
    ]
    names = [c.name for c in present]
    lists = {name: table[name].tolist() for name in names}
    sources = [{name: _json_value(lists[name][i]) for name in names} for i in range(len(table))]
    return {"columns": columns, "sources": sources}


def write_json(table: Table, path: str | Path) -> Path:
    """Write the catalogue as JSON (see :func:`table_to_json`); NaN is written as null.

    Parameters
    ----------
    table
        A table from :func:`make_table`.
    path
        Output file (overwritten).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        json.dump(table_to_json(table), fh, allow_nan=False, separators=(",", ":"))
        fh.write("\n")
    return path


def write_ds9_regions(
    table: Table,
    path: str | Path,
    frame: str = "fk5",
    color: str = "green",
    labels: bool = True,
) -> Path:
    """Write the sources as DS9 sky ellipses (FWHM axes) labelled with their names.

    The file is what ``regions`` writes for ``EllipseSkyRegion(center, width=maj, height=min,
    angle=pa + 90 deg)`` (DS9 ellipses take semi-axes, so maj/2 and min/2 are written), and it
    reads back with ``regions.Regions.read(path, format="ds9")``. It is formatted here directly
    because the ``regions`` serialiser costs about 1.5 ms per source (15 s for 10,000 sources).
    Sources without a finite size are written as points.

    Parameters
    ----------
    table
        A table from :func:`make_table`.
    path
        Output file (overwritten).
    frame
        ``"fk5"`` or ``"icrs"``; the catalogue's ra/dec are J2000 in either.
    color
        DS9 colour of the regions.
    labels
        Whether to attach the source name as the region text.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    if frame not in ("fk5", "icrs"):
        raise ValueError(f"frame must be fk5 or icrs, got {frame!r}")
    if not color.isalnum():
        raise ValueError(f"bad DS9 colour {color!r}")
    path = Path(path)
    ra = np.asarray(table["ra"], dtype=np.float64)
    dec = np.asarray(table["dec"], dtype=np.float64)
    maj = np.asarray(table["maj"], dtype=np.float64)
    mnr = np.asarray(table["min"], dtype=np.float64)
    pa = np.nan_to_num(np.asarray(table["pa"], dtype=np.float64), nan=0.0)
    names = [str(n) for n in table["name"]]
    sized = np.isfinite(maj) & np.isfinite(mnr) & (maj > 0) & (mnr > 0)
    lines = [
        "# Region file format: DS9 version 4.1",
        f"global color={color} width=1",
        frame,
    ]
    for i in np.flatnonzero(np.isfinite(ra) & np.isfinite(dec)):
        # DS9 text cannot hold braces; names never should, but keep the file parseable.
        text = names[i].replace("{", "(").replace("}", ")")
        label = f" # text={{{text}}}" if labels and text else ""
        if sized[i]:
            # regions/DS9: at angle 0 the first axis lies along east (the longitude axis) and
            # the angle turns it towards north, so PA (north through east) + 90 puts the major
            # axis on the PA.
            angle = (pa[i] + 90.0) % 360.0
            lines.append(
                f'ellipse({ra[i] % 360.0:.8f},{dec[i]:.8f},{maj[i] / 2.0:.4f}",'
                f'{mnr[i] / 2.0:.4f}",{angle:.4f}){label}'
            )
        else:
            lines.append(f"point({ra[i] % 360.0:.8f},{dec[i]:.8f}){label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
