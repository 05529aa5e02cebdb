"""The client commands of ``caesar-rest`` against a live server."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from caesar_rest.client.cli import CLIENT_COMMANDS

from tests.support.cut_proxy import CutProxy
from tests.support.server import LiveServer
from tests.support.synth_images import write_synth

CLI = [sys.executable, "-m", "caesar_rest.cli"]


def cli(
    *args: str, url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    for var in ("CAESAR_REST_TOKEN", "CAESAR_REST_TOKEN_FILE", "CAESAR_REST_URL"):
        full.pop(var, None)
    full.update(env or {})
    if url:
        full["CAESAR_REST_URL"] = url
    return subprocess.run(  # noqa: S603
        [*CLI, *args], capture_output=True, text=True, timeout=300, env=full
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("cli-srv")).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_help(command: str) -> None:
    r = cli(command, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout
    for opt in ("--url", "--token-file", "--json"):
        assert opt in r.stdout


def test_submit_wait_download_round_trip(server: LiveServer, s17: Path, tmp_path: Path) -> None:
    """``caesar-rest submit IMAGE --app sep --wait --download DIR``: upload, run, wait, fetch."""
    out = tmp_path / "results"
    r = cli(
        "submit", str(s17), "--app", "sep", "--wait", "--download", str(out),
        "--url", server.url, "--seedthr", "5", "-o", "npixmin=5",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "COMPLETED" in r.stdout
    names = {p.name for p in out.iterdir()}
    assert {"catalog.vot", "catalog.csv", "catalog.json", "catalog.reg", "preview.png",
            "job.log"} <= names, names  # fmt: skip
    assert not any(n.startswith(".") for n in names)  # no partial downloads left
    with open(out / "catalog.csv", newline="") as fh:
        rows = list(csv.DictReader(row for row in fh if not row.startswith("#")))
    assert len(rows) == 59 and "ra" in rows[0]  # a deterministic run
    assert (out / "preview.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "catalog.json").read_text())
    # The job ran with the options given on the command line.
    jobs = json.loads(cli("jobs", "--json", "--last", "1", url=server.url).stdout)
    status = json.loads(cli("status", jobs[0]["job_id"], "--json", url=server.url).stdout)
    assert status["parameters"]["seedthr"] == "5.0" and status["parameters"]["npixmin"] == "5"
    assert status["phase"] == "COMPLETED" and status["app"] == "sep"


def test_json_commands(server: LiveServer, s17: Path, tmp_path: Path) -> None:
    url = server.url
    up = cli("upload", str(s17), "--tag", "cli", "--json", url=url)
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    assert info["size"] == s17.stat().st_size and info["tag"] == "cli"
    apps = json.loads(cli("apps", "--json", url=url).stdout)
    assert {"sep", "sleep"} <= {a["name"] for a in apps}
    options = json.loads(cli("describe", "sleep", "--json", url=url).stdout)
    assert [o["name"] for o in options] == ["seconds", "exit-code"]

    sub = cli("submit", info["file_id"], "--app", "sleep", "--seconds", "60", "--json", url=url)
    assert sub.returncode == 0, sub.stderr
    job = json.loads(sub.stdout)
    jid = job["job_id"]
    assert job["phase"] in ("QUEUED", "EXECUTING")
    listed = json.loads(
        cli("jobs", "--json", "--phase", "QUEUED", "--phase", "EXECUTING", url=url).stdout
    )
    assert jid in [j["job_id"] for j in listed]
    cancel = cli("cancel", jid, "--json", url=url)
    assert json.loads(cancel.stdout)["phase"] == "ABORTED"
    waited = cli("wait", jid, "--json", url=url)
    assert waited.returncode == 1 and json.loads(waited.stdout)["phase"] == "ABORTED"
    results = json.loads(cli("results", jid, "--json", url=url).stdout)
    assert "log" in [r["id"] for r in results]
    dl = cli("download", jid, str(tmp_path / "dl"), "--name", "log", "--json", url=url)
    assert json.loads(dl.stdout) == [str(tmp_path / "dl" / "job.log")]
    assert json.loads(cli("delete", jid, "--json", url=url).stdout)["deleted"] is True
    gone = cli("status", jid, url=url)
    assert gone.returncode == 1 and "404" in gone.stderr


def test_human_output_and_usage_errors(server: LiveServer, s17: Path, tmp_path: Path) -> None:
    url = server.url
    r = cli("apps", url=url)
    assert r.returncode == 0 and "sep" in r.stdout and "sleep" in r.stdout
    r = cli("describe", "sep", url=url)
    assert r.returncode == 0 and "--seedthr" in r.stdout
    r = cli("submit", str(s17), "--app", "sleep", "--seconds", "0", "--wait", url=url)
    assert r.returncode == 0, r.stderr
    assert "COMPLETED" in r.stdout
    r = cli("jobs", url=url)
    assert r.returncode == 0 and "COMPLETED" in r.stdout
    # usage errors: exit 2, nothing sent
    assert cli("submit", str(s17), "--app", "sleep", "--colour", "red", url=url).returncode == 2
    assert cli("submit", str(s17), "--app", "sleep", "-o", "oops", url=url).returncode == 2
    assert cli("status", "x", "extra", url=url).returncode == 2
    # refused by the service, or unreachable: exit 1 with the reason
    r = cli("submit", str(s17), "--app", "sleep", "--seconds", "-1", url=url)
    assert r.returncode == 1 and "seconds" in r.stderr
    r = cli("apps", url="http://127.0.0.1:9")
    assert r.returncode == 1 and "cannot reach" in r.stderr
    r = cli("apps", "--token-file", str(tmp_path / "missing"), url=url)
    assert r.returncode == 1 and "token file" in r.stderr


def test_wait_timeout_exit_code_and_jobs_columns(server: LiveServer, s17: Path) -> None:
    """``wait --timeout`` on a running job exits 3 (not 1, a failed job); ``jobs`` shows the
    app and the input file's name."""
    url = server.url
    sub = cli("submit", str(s17), "--app", "sleep", "--seconds", "60", "--json", url=url)
    jid = json.loads(sub.stdout)["job_id"]
    try:
        waited = cli("wait", jid, "--timeout", "1", "--json", url=url)
        assert waited.returncode == 3, waited.stdout + waited.stderr
        assert "still running" in waited.stderr
        listed = cli("jobs", "--json", "--last", "1", url=url)
        (ref,) = json.loads(listed.stdout)
        assert ref["job_id"] == jid and ref["app"] == "sleep" and ref["input_name"] == s17.name
        human = cli("jobs", "--last", "1", url=url, env={"COLUMNS": "200"})
        line = next(row for row in human.stdout.splitlines() if jid in row)
        assert "sleep" in line and s17.name in line
        again = cli("submit", str(s17), "--app", "sleep", "--seconds", "60", "--wait",
                    "--timeout", "1", url=url)  # fmt: skip
        assert again.returncode == 3, again.stdout + again.stderr
        other = re.search(r"job ([0-9a-f]{32}) created", again.stderr)
        assert other is not None
        cli("cancel", other.group(1), url=url)
    finally:
        cli("cancel", jid, url=url)
    ended = cli("wait", jid, "--timeout", "30", url=url)
    assert ended.returncode == 1  # ABORTED: a job that ended without success
    assert cli("apps", "--retries", "-1", url=url).returncode == 2


def test_download_resumes_across_runs(server: LiveServer, tmp_path: Path) -> None:
    """A download cut short (``--retries 0`` through a proxy that drops the connection) leaves
    its part; the next ``caesar-rest download`` asks for the rest with Range and If-Range (206)
    and ends with the server's bytes; after the file changed on the server it is fetched whole
    (200), not spliced."""
    image = tmp_path / "tiny.fits"
    write_synth(image, [], n=64)
    sub = cli("submit", str(image), "--app", "sleep", "--seconds", "0", "--wait", "--json",
              url=server.url)  # fmt: skip
    assert sub.returncode == 0, sub.stdout + sub.stderr
    jid = json.loads(sub.stdout)["job"]["job_id"]
    (on_disk,) = [p for p in server.jobdir.rglob("result.txt") if jid in str(p)]
    payload = bytes(range(256)) * 8192  # 2 MiB, every offset distinguishable
    on_disk.write_bytes(payload)
    out = tmp_path / "out"
    with CutProxy(server.url) as proxy:
        proxy.cut_after = 300_000
        first = cli("download", jid, str(out), "--name", "result", "--retries", "0",
                    url=proxy.url)  # fmt: skip
        assert first.returncode == 1 and "300000 bytes kept" in first.stderr, first.stderr
        (part,) = out.glob(".result.*.part")
        assert part.read_bytes() == payload[:300_000] and not (out / "result.txt").exists()
        (h1, s1) = proxy.downloads()[-1]
        assert "range" not in h1 and s1 == 200

        proxy.cut_after = None
        second = cli("download", jid, str(out), "--name", "result", url=proxy.url)
        assert second.returncode == 0, second.stderr
        assert (out / "result.txt").read_bytes() == payload
        assert [p.name for p in out.iterdir()] == ["result.txt"]  # the part and its record gone
        (h2, s2) = proxy.downloads()[-1]
        assert h2["range"] == "bytes=300000-" and h2["if-range"].startswith('"') and s2 == 206

        # Cut again, then the file changes on the server: the next run gets the new one whole.
        (out / "result.txt").unlink()
        proxy.cut_after = 500_000
        third = cli("download", jid, str(out), "--name", "result", "--retries", "0",
                    url=proxy.url)  # fmt: skip
        assert third.returncode == 1
        changed = bytes(reversed(payload))
        on_disk.write_bytes(changed)
        os.utime(on_disk, (1_000_000_000, 1_000_000_000))  # another mtime: another ETag
        proxy.cut_after = None
        fourth = cli("download", jid, str(out), "--name", "result", url=proxy.url)
        assert fourth.returncode == 0, fourth.stderr
        assert (out / "result.txt").read_bytes() == changed
        (h4, s4) = proxy.downloads()[-1]
        assert h4["range"] == "bytes=500000-" and s4 == 200  # If-Range did not match
        assert [p.name for p in out.iterdir()] == ["result.txt"]


def test_resumable_upload_command(server: LiveServer, s17: Path, tmp_path: Path) -> None:
    """``caesar-rest upload --resumable`` goes by tus and keeps no state once done."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    up = cli("upload", str(s17), "--tag", "tus", "--resumable", "--json", url=server.url, env=env)
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    assert info["size"] == 4_017_600 and info["tag"] == "tus" and info["format"] == "fits"
    assert list((tmp_path / "cache" / "caesar-rest" / "uploads").iterdir()) == []
    # By tus: the completed upload's record stays until it expires, its bytes are registered.
    (done,) = (server.datadir / ".tus" / "anonymous").iterdir()
    assert done.suffix == ".json" and json.loads(done.read_text())["file_id"] == info["file_id"]
