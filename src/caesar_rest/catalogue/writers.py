"""Build catalogue tables in the shared schema and write them as VOTable, CSV, JSON and DS9.

Every writer takes a table made by :func:`make_table` (all :data:`COLUMNS`, in order, with
dtype, unit, UCD and description), so the files of every app look the same.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import astropy
import astropy.units as u
import numpy as np
import numpy.typing as npt
from astropy.io.votable import from_table, xmlutil
from astropy.io.votable import writeto as votable_writeto
from astropy.io.votable.tree import CooSys, Info, Param
from astropy.table import Column as TableColumn
from astropy.table import Table
from astropy.utils.xml.writer import XMLWriter, xml_escape_cdata

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
    chunks = _csv_chunks(table)
    if chunks is None:
        table.write(path, format="ascii.csv", overwrite=True)
    else:
        with path.open("w", encoding="utf-8", newline="") as fh:
            fh.writelines(chunks)
    return path


#: Rows formatted at a time by the CSV and JSON writers (the text of the whole table is never
#: held: at 20,000 rows it is tens of MB of Python strings).
WRITE_CHUNK = 2048


def _plain_columns(table: Table) -> bool:
    """Whether every column is a plain 1-D :class:`~astropy.table.Column` (no mask, no mixin,
    no format) of floats, integers, booleans or unicode strings: the columns the fast writers
    format (anything else goes through astropy's writers)."""
    for name in table.colnames:
        col = table[name]
        if type(col) is not TableColumn or col.ndim != 1 or col.info.format is not None:
            return False
        if col.dtype.kind not in "fiubU" or not col.dtype.isnative:
            return False
    return True


def _csv_text(table: Table) -> str | None:
    """The file astropy's fast CSV writer (``format="ascii.csv"``) makes of ``table``, made
    the same way (the ``csv`` module on the columns' ``tolist()`` values, strings stripped of
    blanks and tabs) without astropy's per-call set-up (~10 ms a table); None for a table
    outside :func:`_plain_columns` or with comments."""
    chunks = _csv_chunks(table)
    return None if chunks is None else "".join(chunks)


def _csv_chunks(table: Table) -> Iterator[str] | None:
    """:func:`_csv_text`'s text, :data:`WRITE_CHUNK` rows at a time (None where it is None)."""
    if not _plain_columns(table) or table.meta.get("comments"):
        return None
    return _csv_rows(table)


def _csv_rows(table: Table) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(
        buf,
        delimiter=",",
        doublequote=True,
        escapechar=None,
        quotechar='"',
        quoting=csv.QUOTE_MINIMAL,
        lineterminator=os.linesep,
    )
    writer.writerow([name.strip() for name in table.colnames])
    for a in range(0, len(table), WRITE_CHUNK):
        cols: list[list[Any]] = []
        for name in table.colnames:
            values = table[name][a : a + WRITE_CHUNK].tolist()
            if table[name].dtype.kind == "U":
                values = [v.strip(" \t") for v in values]
            cols.append(values)
        writer.writerows(zip(*cols, strict=True))
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


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
    if tabledata_format == "tabledata":
        text = _tabledata_votable(table, meta)
        if text is not None:
            path.write_text(text, encoding="utf-8")
            return path
    return _astropy_votable(table, path, meta, tabledata_format)


def _astropy_votable(table: Table, path: Path, meta: VOTableMeta, tabledata_format: str) -> Path:
    """The VOTable through astropy's ``from_table`` and ``writeto`` (BINARY, and the tables
    :func:`_tabledata_votable` leaves to astropy)."""
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


#: VOTable datatypes of the column dtypes :func:`_tabledata_votable` writes (astropy's
#: ``numpy_to_votable_dtype``); float32 is left to astropy (it prints float32 digits).
_VOTABLE_DATATYPES = {
    "f8": "double",
    "i8": "long",
    "i4": "int",
    "i2": "short",
    "u1": "unsignedByte",
    "b1": "bit",
}
#: Column meta keys astropy's ``from_table`` would write (besides ``ucd``): such a table is
#: left to astropy.
_FIELD_META_KEYS = ("width", "precision", "utype", "xtype", "links", "_votable_string_dtype")


@functools.lru_cache(maxsize=256)
def _vo_unit(unit: u.UnitBase) -> str:
    """A unit as astropy's VOTable writer prints it (VOUnit, else the generic string)."""
    try:
        return str(unit.to_string("vounit"))
    except ValueError:
        return str(unit.to_string())


@functools.lru_cache(maxsize=64)
def _param_unit(unit: str) -> u.UnitBase:
    """A PARAM's unit string, parsed as astropy's VOTable PARAM does (VOUnit, silently)."""
    return u.Unit(unit, format="vounit", parse_strict="silent")


def _vo_double(value: float) -> str:
    """A double as astropy's VOTable writer prints it (``str``, a trailing ``.0`` dropped)."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+InF" if value > 0 else "-InF"
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _td_cells(col: TableColumn, kind: str, pad: str) -> list[str]:
    """The ``<TD>`` lines of one column (``<TD/>`` for an empty string)."""
    td, empty = pad + "<TD>", pad + "<TD/>\n"
    values = col.tolist()
    if kind == "double":
        return [f"{td}{_vo_double(v)}</TD>\n" for v in values]
    if kind == "bit":
        return [f"{td}{'1' if v else '0'}</TD>\n" for v in values]
    if kind == "unicodeChar":
        return [f"{td}{xml_escape_cdata(v)}</TD>\n" if v else empty for v in values]
    return [f"{td}{v}</TD>\n" for v in values]


#: A FIELD of the fast VOTable writer: its attributes, its description and its datatype.
_Field: TypeAlias = tuple[dict[str, str], str | None, str]


def _vo_fields(table: Table) -> list[_Field] | None:
    """The FIELDs astropy's ``from_table`` makes of the columns (``ref`` to the COOSYS for
    ``ra``/``dec``); None when a column is outside :func:`_plain_columns`, has metadata
    astropy would also write, or a dtype left to astropy."""
    if table.meta or not _plain_columns(table):
        return None
    fields: list[_Field] = []
    for name in table.colnames:
        col = table[name]
        cmeta = col.info.meta or {}
        if any(cmeta.get(k) is not None for k in _FIELD_META_KEYS) or "_votable_arraysize" in cmeta:
            return None
        dtype = col.dtype
        attrib = {"ID": xmlutil.fix_id(name), "name": name}
        if dtype.kind == "U":
            if dtype.itemsize == 0:
                return None
            attrib["datatype"], attrib["arraysize"] = "unicodeChar", str(dtype.itemsize // 4)
        else:
            key = f"{dtype.kind}{dtype.itemsize}"
            if key not in _VOTABLE_DATATYPES:
                return None
            attrib["datatype"] = _VOTABLE_DATATYPES[key]
        if cmeta.get("ucd") is not None:
            attrib["ucd"] = str(cmeta["ucd"])
        if col.info.unit is not None:
            attrib["unit"] = _vo_unit(col.info.unit)
        if name in ("ra", "dec"):
            attrib["ref"] = COOSYS_ID
        fields.append((attrib, col.info.description, attrib["datatype"]))
    return fields


def _write_resource_meta(w: XMLWriter, meta: VOTableMeta) -> None:
    """The RESOURCE's INFO, COOSYS and PARAM elements, as :func:`write_votable` adds them."""
    for iname, value in meta.infos:
        w.element("INFO", attrib={"ID": xmlutil.fix_id(iname), "name": iname, "value": value})
    coosys = {"ID": COOSYS_ID, "system": meta.system}
    if meta.equinox is not None:
        coosys["equinox"] = meta.equinox
    w.element("COOSYS", attrib=coosys)
    for par in meta.params:
        if not math.isfinite(par.value):
            continue
        attrib = {
            "ID": xmlutil.fix_id(par.name),
            "datatype": "double",
            "name": par.name,
            "ucd": par.ucd,
            "value": _vo_double(float(par.value)),
        }
        if par.unit:
            attrib["unit"] = _vo_unit(_param_unit(par.unit))
        with w.tag("PARAM", attrib):
            if par.description is not None:
                w.element("DESCRIPTION", par.description, wrap=True)


def _tabledata_votable(table: Table, meta: VOTableMeta) -> str | None:
    """The TABLEDATA VOTable astropy's ``from_table`` and ``writeto`` make of ``table`` and
    ``meta`` (as :func:`write_votable` sets them up), byte for byte: written with astropy's
    own XML writer for the elements, the rows formatted column by column (astropy converts
    every cell through several Python calls, ~0.1 s for a table of 50 rows and 40 columns).

    Returns
    -------
    str or None
        The file's text; None for a table the fast path leaves to astropy (see
        :func:`_vo_fields`).
    """
    fields = _vo_fields(table)
    if fields is None:
        return None
    parts: list[str] = []
    w = XMLWriter(_Parts(parts))
    w.write(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<!-- Produced with astropy.io.votable version {astropy.__version__}\n"
        "     http://www.astropy.org/ -->\n"
    )
    with w.tag("VOTABLE", _VOTABLE_ATTRIB), w.tag("RESOURCE", {"type": "results"}):
        _write_resource_meta(w, meta)
        with w.tag("TABLE"):
            for attrib, description, _ in fields:
                with w.tag("FIELD", attrib):
                    if description is not None:
                        w.element("DESCRIPTION", description, wrap=True)
            if len(table):  # astropy writes no DATA for an empty table
                with w.tag("DATA"), w.tag("TABLEDATA"):
                    w._flush()
                    pad = w.get_indentation_spaces()
                    cells = [
                        _td_cells(table[name], kind, pad + " ")
                        for name, (_, _, kind) in zip(table.colnames, fields, strict=True)
                    ]
                    tr, end = pad + "<TR>\n", pad + "</TR>\n"
                    parts.extend(tr + "".join(row) + end for row in zip(*cells, strict=True))
    return "".join(parts)


#: The VOTABLE element's attributes as astropy writes them (version 1.4).
_VOTABLE_ATTRIB = {
    "version": "1.4",
    "xmlns": "http://www.ivoa.net/xml/VOTable/v1.3",
    "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "xsi:schemaLocation": "http://www.ivoa.net/xml/VOTable/v1.3 "
    "http://www.ivoa.net/xml/VOTable/VOTable-1.4.xsd",
}


class _Parts:
    """A file-like ``write`` into a list of strings (for :class:`XMLWriter`)."""

    def __init__(self, parts: list[str]) -> None:
        self.write = parts.append


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
    columns = _json_columns(table)
    return {"columns": columns, "sources": _json_sources(table, [c["name"] for c in columns])}


def _json_columns(table: Table) -> list[dict[str, str]]:
    present = [*COLUMNS, *(c for c in CLASS_COLUMNS if c.name in table.colnames)]
    return [
        {"name": c.name, "unit": c.unit, "ucd": c.ucd, "description": c.description}
        for c in present
    ]


def _json_sources(table: Table, names: list[str]) -> list[dict[str, Any]]:
    lists = {name: table[name].tolist() for name in names}
    return [{name: _json_value(lists[name][i]) for name in names} for i in range(len(table))]


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
    columns = _json_columns(table)
    names = [c["name"] for c in columns]
    return write_json_rows(
        path,
        {"columns": columns},
        "sources",
        len(table),
        lambda a, b: _json_sources(table[a:b], names),
        WRITE_CHUNK,
    )


def compact_json(value: Any) -> str:
    """``value`` as the catalogues' JSON: compact, NaN refused (the writers make it None).

    Parameters
    ----------
    value
        A JSON-able value.

    Returns
    -------
    str
        Its text (``json.dumps``, not ``dump``: one string from the C encoder; ``dump``
        streams through the Python one).
    """
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def write_json_rows(
    path: Path,
    head: Mapping[str, Any],
    key: str,
    n: int,
    rows: Callable[[int, int], list[Any]],
    chunk: int,
) -> Path:
    """Write the document ``{**head, key: rows(0, n)}`` with the bytes of its
    :func:`compact_json` and a newline, formatting ``chunk`` rows at a time (the text of
    the whole document is never held: at 20,000 rows it is tens of MB of Python strings).

    Parameters
    ----------
    path
        Output file (overwritten).
    head
        The document's first keys.
    key
        The last key, whose value is the list of rows.
    n
        The number of rows.
    rows
        ``rows(a, b)``: rows ``a`` to ``b - 1``, as JSON-able values.
    chunk
        Rows formatted at a time.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    with path.open("w", encoding="utf-8") as fh:
        fh.write("{" + "".join(f"{compact_json(k)}:{compact_json(v)}," for k, v in head.items()))
        fh.write(compact_json(key) + ":[")
        for a in range(0, n, chunk):
            fh.write(("," if a else "") + ",".join(compact_json(r) for r in rows(a, a + chunk)))
        fh.write("]}\n")
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
