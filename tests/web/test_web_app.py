"""The web application in a real browser (Debian's headless Chromium through Playwright)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.paths import SHARED_DATA
from tests.support.server import LiveServer
from tests.support.web import browser_page, require_chromium, shot_path

IMAGE = SHARED_DATA / "ScorpioS17Field.fits"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_chromium()
    srv = LiveServer(tmp_path_factory.mktemp("web")).start()
    yield srv
    srv.stop()


def test_app_assets_are_served_locally(server: LiveServer) -> None:
    page = httpx.get(f"{server.url}/app/", timeout=10)
    assert page.status_code == 200 and 'src="static/app.js"' in page.text
    js = httpx.get(f"{server.url}/app/static/app.js", timeout=10)
    assert js.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{server.url}/app/static/..%2Findex.py", timeout=10).status_code == 404
    # No asset from elsewhere: every src/href of the page is relative.
    assert not re.search(r'(src|href)="(https?:)?//', page.text)


def test_upload_choose_sep_validate_submit_and_follow(server: LiveServer, tmp_path: Path) -> None:
    with browser_page() as page:
        page.goto(f"{server.url}/app/")  # type: ignore[attr-defined]
        page.set_input_files("#file-input", str(IMAGE))  # type: ignore[attr-defined]
        row = page.locator("#file-table tbody tr")  # type: ignore[attr-defined]
        row.first.wait_for()
        cells = row.first.locator("td").all_inner_texts()
        assert cells[:5] == [
            "ScorpioS17Field.fits",
            "3.83 MiB",
            "1000 × 1000",
            "6.5 × 6.5",
            "RA---NCP, DEC--NCP",
        ]
        assert page.locator(".upload.done progress").get_attribute("value") == "100"  # type: ignore[attr-defined]
        page.screenshot(path=str(shot_path(tmp_path, "files")))  # type: ignore[attr-defined]

        page.click("a[data-screen=jobs]")  # type: ignore[attr-defined]
        options = [o for o in page.locator("#job-app option").all_inner_texts()]  # type: ignore[attr-defined]
        assert "sep" in options and "caesar-cpp" not in options  # available apps only
        page.select_option("#job-app", "sep")  # type: ignore[attr-defined]
        page.locator('.field[data-option="seedthr"] input').wait_for()  # type: ignore[attr-defined]
        assert page.input_value("#opt-seedthr") == "5"  # type: ignore[attr-defined]
        page.fill("#opt-seedthr", "-5")  # type: ignore[attr-defined]
        page.click("#submit")  # type: ignore[attr-defined]
        err = page.locator('.field[data-option="seedthr"] .error')  # type: ignore[attr-defined]
        err.filter(has_text="below").wait_for()
        assert err.inner_text() == "option 'seedthr' = -5.0 is below its minimum 0.0"
        page.screenshot(path=str(shot_path(tmp_path, "jobs-validation")))  # type: ignore[attr-defined]

        page.fill("#opt-seedthr", "6")  # type: ignore[attr-defined]
        page.click("#submit")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"#job/[0-9a-f]{32}$"))  # type: ignore[attr-defined]
        page.locator("#job-state", has_text="SUCCESS").wait_for(timeout=60_000)  # type: ignore[attr-defined]
        results = page.locator("#job-results a").all_inner_texts()  # type: ignore[attr-defined]
        assert {"catalog.vot", "catalog.csv", "catalog.json"} <= set(results)
        assert "EXECUTING → COMPLETED success" in page.inner_text("#job-events")  # type: ignore[attr-defined]
        page.screenshot(path=str(shot_path(tmp_path, "job")))  # type: ignore[attr-defined]

        job_id = page.url.rsplit("/", 1)[1]  # type: ignore[attr-defined]
        # A second job on the same image (through the API) to compare with in the viewer.
        api = httpx.Client(base_url=f"{server.url}/caesar/api/v1.0", timeout=20)
        fid = api.get("/fileids").json()[0]["fileid"]
        other = api.post("/job", json={"app": "sep", "data_inputs": fid, "job_inputs": {}})
        other_id = other.json()["job_id"]

        page.click("a[data-screen=jobs]")  # type: ignore[attr-defined]
        job_row = page.locator(f'#job-table tbody tr[data-id="{job_id}"]')  # type: ignore[attr-defined]
        job_row.wait_for()
        assert job_row.get_attribute("data-state") == "SUCCESS"
        assert job_row.locator("td").nth(2).inner_text() == "ScorpioS17Field.fits"
        wait_success(api, other_id)

        page.goto(f"{server.url}/app/#job/{job_id}")  # type: ignore[attr-defined]
        page.click("#open-viewer")  # type: ignore[attr-defined]
        walk_viewer(page, tmp_path, job_id, other_id)
        check_samp_encoding(page)


def wait_success(api: httpx.Client, job_id: str) -> None:
    """Poll the job until it has finished; it must succeed."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = api.get(f"/job/{job_id}/status").json()["state"]
        if state in ("SUCCESS", "FAILURE", "CANCELED", "TIMED-OUT", "ABORTED"):
            break
        time.sleep(0.3)
    assert state == "SUCCESS"


def walk_viewer(page: Any, tmp_path: Path, job_id: str, other_id: str) -> None:
    """The viewer: tiles, overlay coloured by class, hover and click, table both ways, compare."""
    page.locator("#v-title", has_text="sep").wait_for()
    assert page.inner_text("#v-title") == f"sep {job_id[:8]} · 1000 × 1000 px · 35 sources"
    page.wait_for_function("document.querySelectorAll('#tiles img.tile[src]').length >= 4")
    assert page.locator("#ov-a ellipse").count() == 35
    assert page.inner_text("#cat-count") == "35 of 35 sources"
    classes = page.locator("#cat-legend .swatch").all_inner_texts()
    assert "compact" in classes and "extended" in classes
    page.screenshot(path=str(shot_path(tmp_path, "viewer")))

    # Cursor readout: pixel, RA/Dec and value from the server.
    box = page.locator("#view").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.locator("#v-cursor", has_text="RA").wait_for()
    assert page.inner_text("#v-cursor") == (
        "x 500 y 500 · RA 17:08:29.65 Dec -43:12:45.1 (257.12353°, -43.21254°) · 0.003924 JY/BEAM"
    )

    # Click a source on the image: its table row is selected and shown.
    ellipse = page.locator('#ov-a ellipse[data-row="4"]')
    ellipse.hover(force=True)
    assert page.locator("#v-tip").is_visible()
    ellipse.click(force=True)
    row = page.locator('#cat-table tbody tr[data-row="4"]')
    assert row.get_attribute("class") == "sel"
    name = row.locator("td").first.inner_text()
    assert page.inner_text("#v-row h4") == name
    page.screenshot(path=str(shot_path(tmp_path, "viewer-source")))

    # Table to image: sort by snr (descending), filter, click a row -> its ellipse is selected.
    page.click('#cat-table th[data-col="snr"]')
    page.click('#cat-table th[data-col="snr"]')
    snrs = [
        float(t) for t in page.locator("#cat-table tbody tr td:nth-child(12)").all_inner_texts()
    ]
    assert snrs == sorted(snrs, reverse=True)
    page.fill("#cat-filter", "snr>100")
    shown = page.locator("#cat-table tbody tr").count()
    assert page.inner_text("#cat-count") == f"{shown} of 35 sources" and 0 < shown < 35
    assert page.locator("#ov-a ellipse:not(.hidden)").count() == shown
    first = page.locator("#cat-table tbody tr").first
    first.click()
    sel = page.locator("#ov-a ellipse.sel")
    assert sel.get_attribute("data-row") == first.get_attribute("data-row")
    page.fill("#cat-filter", "")

    # Downloads for TOPCAT/DS9, then a second job's catalogue overlaid and compared.
    hrefs = page.locator("#downloads a").evaluate_all("(as) => as.map((a) => a.href)")
    assert [h.rsplit("/", 1)[1] for h in hrefs] == ["catalog", "catalog-csv", "regions"]
    page.click("#v-fit")
    page.select_option("#v-compare", other_id)
    page.locator("#v-compare-report", has_text="matched").wait_for()
    assert page.inner_text("#v-compare-report") == (
        "35 matched within 6.5″ · 0 only in this job (solid, thick) · 24 only in sep "
        "(dashed, thick) · median flux ratio 1"
    )  # seedthr 6 finds a subset of the default run's 59 sources, with the same fluxes
    assert page.locator("#ov-b ellipse.unmatched").count() == 24
    assert page.locator("#ov-b ellipse.second").count() == 59
    page.screenshot(path=str(shot_path(tmp_path, "viewer-compare")))


def check_samp_encoding(page: Any) -> None:
    """The SAMP web-profile client's encoding (a test cannot run a hub: no SAMP hub here)."""
    got = page.evaluate(
        """async () => {
        const s = await import("./static/samp.js");
        const msg = s.loadMessage("table", "http://h/x.vot", "cat <1>");
        const call = s.encodeCall("notifyAll", ["key-1", msg]);
        const reply = '<?xml version="1.0"?><methodResponse><params><param><value><struct>' +
          '<member><name>samp.private-key</name><value>k-9</value></member>' +
          '<member><name>ids</name><value><array><data><value><string>c1</string></value>' +
          '</data></array></value></member></struct></value></param></params></methodResponse>';
        const fault = '<methodResponse><fault><value><struct><member><name>faultString</name>' +
          '<value><string>no</string></value></member></struct></value></fault></methodResponse>';
        let err = null;
        try { s.decodeResponse(fault); } catch (e) { err = e.message; }
        let nohub = null;
        try { await s.call("ping", [], "http://127.0.0.1:9/"); }
        catch (e) { nohub = e.message; }
        return { call, reply: s.decodeResponse(reply), err, nohub };
    }"""
    )
    assert got["call"] == (
        '<?xml version="1.0"?><methodCall><methodName>samp.webhub.notifyAll</methodName><params>'
        "<param><value><string>key-1</string></value></param><param><value><struct>"
        "<member><name>samp.mtype</name><value><string>table.load.votable</string></value></member>"
        "<member><name>samp.params</name><value><struct>"
        "<member><name>url</name><value><string>http://h/x.vot</string></value></member>"
        "<member><name>name</name><value><string>cat &lt;1&gt;</string></value></member>"
        "<member><name>table-id</name><value><string>http://h/x.vot</string></value></member>"
        "</struct></value></member></struct></value></param></params></methodCall>"
    )
    assert got["reply"] == {"samp.private-key": "k-9", "ids": ["c1"]}
    assert got["err"] == "SAMP hub fault: no"
    assert got["nohub"].startswith("no SAMP hub answers at http://127.0.0.1:9/")
