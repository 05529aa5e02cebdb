"""The file service on its own: pre-checks, receipt, identification, store, delete, forget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from caesar_rest.auth.users import Limits
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.migrate import upgrade
from caesar_rest.db.models import JobRecord
from caesar_rest.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    QuotaExceeded,
    ServiceError,
    TooLarge,
    Unsupported,
)
from caesar_rest.settings import Settings
from caesar_rest.storage.files import FRAMING, FileService, UploadLimits
from caesar_rest.storage.upload import UploadError
from caesar_rest.timeutil import utcnow

from tests.support.multipart import form_body

BOUNDARY = "b0undary"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(payload: bytes, name: str = "img.fits", tag: str = "t1") -> bytes:
    return form_body(payload, BOUNDARY, name, tag, content_type=False)


async def stream(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 4096):
        yield data[i : i + 4096]


def fits_bytes(tmp: Path) -> bytes:
    path = tmp / "src.fits"
    fits.PrimaryHDU(np.ones((8, 8), dtype=np.float32)).writeto(path, overwrite=True)
    return path.read_bytes()


@pytest.fixture
def files(tmp_path: Path) -> FileService:
    settings = Settings(datadir=tmp_path / "data", jobdir=tmp_path / "jobs")  # type: ignore[call-arg]
    settings.ensure_dirs()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    return FileService(settings, make_sessionmaker(engine))


NO_LIMITS = Limits(0, 0, 3600)


def upload(files: FileService, data: bytes, limits: UploadLimits) -> object:
    return asyncio.run(files.upload(stream(data), CTYPE, "alice", limits))


def test_upload_stores_lists_and_deletes(files: FileService, tmp_path: Path) -> None:
    data = multipart(fits_bytes(tmp_path))
    stored = upload(files, data, UploadLimits(str(len(data)), NO_LIMITS))
    rec = stored.record  # type: ignore[attr-defined]
    assert stored.format.ext == "fits" and rec.tag == "t1"  # type: ignore[attr-defined]
    assert files.path(rec).read_bytes() == fits_bytes(tmp_path)
    assert [f.id for f in files.list("alice")] == [rec.id]
    assert files.list("bob") == []
    assert files.owned("alice", rec.id).id == rec.id
    with pytest.raises(NotFound, match="not found on the system"):
        files.owned("bob", rec.id)
    with pytest.raises(Invalid, match="expected 32 hexadecimal digits"):
        files.owned("alice", "../etc")
    files.delete("alice", rec.id)
    assert files.list("alice") == [] and not files.path(rec).exists()


def test_prechecks_refuse_before_reading(files: FileService) -> None:
    over = files.settings.max_upload_bytes + FRAMING + 1
    with pytest.raises(TooLarge, match="Upload too large") as err:
        files.precheck("alice", UploadLimits(str(over)))
    assert err.value.status == 413
    with pytest.raises(Forbidden, match="Storage quota exceeded") as quota:
        files.precheck("alice", UploadLimits(str(FRAMING + 2000), Limits(1000, 0, 3600)))
    assert quota.value.status == 403
    assert quota.value.body == {"limit": "bytes", "quota": 1000, "used": 0, "requested": 67536}
    files.precheck("alice", UploadLimits("not a number", Limits(1000, 0, 3600)))
    files.precheck("alice", UploadLimits(None, Limits(1000, 0, 3600)))


def test_refusals_leave_nothing_behind(files: FileService, tmp_path: Path) -> None:
    incoming = files.settings.datadir / ".incoming"
    with pytest.raises(Unsupported, match="File refused") as bad:
        upload(files, multipart(b"not an image at all"), UploadLimits(None, NO_LIMITS))
    assert bad.value.status == 415
    with pytest.raises(UploadError, match="no file part"):
        upload(files, f"--{BOUNDARY}--\r\n".encode(), UploadLimits(None, NO_LIMITS))
    data = multipart(fits_bytes(tmp_path))
    with pytest.raises(QuotaExceeded) as quota:
        upload(files, data, UploadLimits(None, Limits(100, 0, 3600)))
    assert quota.value.status == 403
    assert files.list("alice") == []
    assert list(incoming.glob("*")) == []
    assert not any(
        p.is_file() for p in files.settings.datadir.rglob("*") if ".incoming" not in str(p)
    )


def test_delete_refused_while_a_job_reads_the_file(files: FileService, tmp_path: Path) -> None:
    data = multipart(fits_bytes(tmp_path))
    rec = upload(files, data, UploadLimits(None, NO_LIMITS)).record  # type: ignore[attr-defined]
    now = utcnow()
    with files.sessions.begin() as s:
        s.add(
            JobRecord(
                id="a" * 32,
                owner="alice",
                app="sep",
                job_inputs={},
                input_file_id=rec.id,
                phase="QUEUED",
                backend="local",
                reldir="alice/job_x",
                time_limit=60,
                created_at=now,
                updated_at=now,
            )
        )
    with pytest.raises(Conflict, match=f"unfinished job {'a' * 32}") as err:
        files.delete("alice", rec.id)
    assert err.value.status == 409
    files.forget(rec)  # no checks: the inline upload of a job that could not be created
    assert files.list("alice") == [] and not files.path(rec).exists()


def test_error_classes_carry_their_status() -> None:
    """Each class answers its status; the domain errors keep their Python bases."""
    from caesar_rest.apps.base import OptionError
    from caesar_rest.jobs.service import InputFileNotFound, JobNotFound, SubmitError
    from caesar_rest.storage.formats import FormatError

    assert ServiceError(418, "teapot", a=1).status == 418
    for exc, status, base in (
        (JobNotFound("x"), 404, LookupError),
        (InputFileNotFound("x"), 400, ValueError),
        (SubmitError("x"), 400, ValueError),
        (OptionError(["a", "b"]), 400, ValueError),
        (UploadError("x"), 400, ValueError),
        (FormatError("x"), 415, ValueError),
    ):
        assert isinstance(exc, ServiceError) and isinstance(exc, base)
        assert exc.status == status, exc
    assert str(OptionError(["a", "b"])) == "a; b"
    retry = QuotaExceeded(429, "slow down", limit="submission_rate", retry_after=60)
    assert retry.headers == {"Retry-After": "60"}
    assert retry.body == {"limit": "submission_rate", "retry_after": 60}
    assert QuotaExceeded(403, "full", limit="bytes").headers is None
