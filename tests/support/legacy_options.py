"""The predecessor's caesar option table, kept as data (``data/legacy_caesar_options.tsv``).

The app's option table is checked against this transcription, an oracle independent of the
code under test.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

LEGACY_CAESAR_OPTIONS = Path(__file__).resolve().parent / "data" / "legacy_caesar_options.tsv"

#: Where this implementation deliberately differs from the predecessor, as documented in
#: docs/compatibility.md ("the default of ``extsfinder`` is ``WT-THRESH``", "the noise of the
#: background boxes").
DOCUMENTED_DEVIATIONS: dict[str, dict[str, Any]] = {
    "extsfinder": {"default": "WT-THRESH"},
    "ac-levelset": {"default": "SALIENCY"},
    "bkgestimator": {"default": "ClippedMedian"},
}


@dataclass(frozen=True)
class LegacyRow:
    """One option of the predecessor: its name, kind, default, bounds, values, place."""

    name: str
    kind: str
    default: str
    min: float | None
    max: float | None
    values: tuple[str, ...]
    category: str
    subcategory: str
    advanced: bool


def _number(text: str) -> float | None:
    return float(text) if text else None


def _same_number(text: str) -> str:
    """A numeric default in one spelling ("0.", "0" and "0.0" are the same value)."""
    return repr(float(text))


def read_legacy_caesar_options(path: Path = LEGACY_CAESAR_OPTIONS) -> list[LegacyRow]:
    """The predecessor's options in its order (the file's ``#`` lines are comments)."""
    rows: list[LegacyRow] = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        _, name, kind, default, lo, hi, values, cat, sub, adv = line.split("\t")
        if kind in ("int", "float"):
            default = _same_number(default)
        rows.append(
            LegacyRow(
                name=name,
                kind=kind,
                default=default,
                min=_number(lo),
                max=_number(hi),
                values=tuple(values.split("|")) if values else (),
                category=cat,
                subcategory=sub,
                advanced=adv == "Y",
            )
        )
    return rows


def describe_like_legacy(opt: Any) -> LegacyRow:
    """An app option (``caesar_rest.apps.base.Option``) in the predecessor's terms."""
    if opt.is_flag:
        kind = "flag"
    elif opt.allowed_values:
        kind = "enum"
    else:
        kind = str(opt.type)
    default = "" if opt.is_flag else str(opt.default)
    if kind in ("int", "float"):
        default = _same_number(str(opt.default))
    return LegacyRow(
        name=opt.name,
        kind=kind,
        default=default,
        min=None if opt.min is None else float(opt.min),
        max=None if opt.max is None else float(opt.max),
        values=tuple(opt.allowed_values or ()),
        category=opt.category,
        subcategory=opt.subcategory,
        advanced=bool(opt.advanced),
    )


def expected_caesar_options() -> list[LegacyRow]:
    """The predecessor's options with the documented deviations applied."""
    return [
        replace(row, **DOCUMENTED_DEVIATIONS.get(row.name, {}))
        for row in read_legacy_caesar_options()
    ]
