"""Where files and job folders live. Paths are derived from ids made here, never from clients."""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from pathlib import Path

_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_JOB_ID_RE = re.compile(
    r"^[0-9a-f]{32}$|^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
_SAFE_OWNER = re.compile(r"[^A-Za-z0-9_.-]")
_UNSAFE_NAME = re.compile(r"[^\w.+-]", re.UNICODE)

INCOMING = ".incoming"


def new_id() -> str:
    """A new 32-hex identifier (uuid4)."""
    return uuid.uuid4().hex


def is_file_id(value: str) -> bool:
    """Whether ``value`` looks like a file id (32 lower-case hex digits)."""
    return bool(_ID_RE.match(value))


def is_job_id(value: str) -> bool:
    """Whether ``value`` looks like a job id (32 hex, or a dashed UUID)."""
    return bool(_JOB_ID_RE.match(value))


def owner_dirname(owner: str) -> str:
    """A folder name for ``owner``: readable when safe, else suffixed with a hash.

    Distinct owners always get distinct folders (unlike the predecessor, where ``a.b@c`` and
    ``a_b@c`` collided).
    """
    safe = _SAFE_OWNER.sub("_", owner)[:64].lstrip(".") or "user"
    if safe == owner:
        return safe
    digest = hashlib.sha256(owner.encode()).hexdigest()[:12]
    return f"{safe}-{digest}"


def sanitize_filename(name: str, default: str = "upload") -> str:
    """A safe display name from a client-supplied file name.

    Drops directories, normalises Unicode (NFC), replaces characters other than letters,
    digits, ``.``, ``_``, ``+`` and ``-``, strips leading dots and limits the length.
    """
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE_NAME.sub("_", name).lstrip("._")
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 200 - len(ext) - 1] + dot + ext) if dot and len(ext) < 20 else name[:200]
    return name or default


def safe_join(root: Path, relpath: str) -> Path:
    """``root / relpath``, refusing anything that escapes ``root``."""
    root = root.resolve()
    path = (root / relpath).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"path {relpath!r} escapes its root")
    return path
