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
from tests.support.web import chromium, new_page, require_chromium, shot_path

IMAGE = SHARED_DATA / "ScorpioS17Field.fits"
MiB = 1024 * 1024
#: The walk's page: every upload by tus in 1 MiB chunks, job-list pages of one job.
SETTINGS = f"window.caesarSettings = {{resumableAbove: 0, chunkSize: {MiB}, jobPage: 1}};"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_chromium()
    srv = LiveServer(tmp_path_factory.mktemp("web")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(server: LiveServer) -> Any:
    """One Chromium for the module (a page per test, in its own context)."""
    with chromium() as b:
        yield b


def test_app_assets_are_served_locally(server: LiveServer) -> None:
    page = httpx.get(f"{server.url}/app/", timeout=10)
    assert page.status_code == 200 and 'src="static/app.js"' in page.text
    js = httpx.get(f"{server.url}/app/static/app.js", timeout=10)
    assert js.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{server.url}/app/static/..%2Findex.py", timeout=10).status_code == 404
    # No asset from elsewhere: every src/href of the page is relative.
    assert not re.search(r'(src|href)="(https?:)?//', page.text)


def upload_cut_then_resumed(page: Any, server: LiveServer) -> None:
    """A tus upload whose connection is cut after its first chunk resumes on a reloaded page."""
    seen: list[str] = []
    cut = [True]

    def handle(route: Any) -> None:
        seen.append(route.request.method)
        if cut[0] and route.request.method == "PATCH" and seen.count("PATCH") >= 2:
            route.abort()  # the network is gone from the second chunk on
        else:
            route.continue_()

    page.route("**/files/tus**", handle)
    page.goto(f"{server.url}/app/")
    page.set_input_files("#file-input", str(IMAGE))
    page.locator(".upload .error", has_text="failed 4 times").wait_for()
    # Each cut chunk: the offset asked again (HEAD) and the chunk tried again, 4 times.
    assert seen == ["POST", "PATCH", "PATCH", "HEAD", "PATCH", "HEAD", "PATCH", "HEAD", "PATCH"]
    assert page.evaluate("Object.keys(localStorage).length") == 1  # the upload's URL
    cut[0] = False
    seen.clear()
    page.reload()
    page.set_input_files("#file-input", str(IMAGE))
    page.locator(".upload.resumable.done").wait_for()
    # The same upload: its offset (1 MiB) asked, the three other chunks sent.
    assert seen == ["HEAD", "PATCH", "PATCH", "PATCH"]
    assert page.evaluate("Object.keys(localStorage).length") == 0  # nothing left to resume


def test_upload_choose_sep_validate_submit_and_follow(
    server: LiveServer, browser: Any, tmp_path: Path
) -> None:
    page = new_page(browser, init=SETTINGS)
    job_lists: list[str] = []
    page.on("request", lambda r: job_lists.append(r.url) if "/jobs?" in r.url else None)
    upload_cut_then_resumed(page, server)
    row = page.locator("#file-table tbody tr")
    row.first.wait_for()
    api = httpx.Client(base_url=f"{server.url}/caesar/api/v1.0", timeout=20)
    fid = api.get("/fileids").json()[0]["fileid"]
    # A caesar job (islands) runs while the page walks the sep one.
    caesar = api.post("/job", json={"app": "caesar", "data_inputs": fid, "job_inputs": {}})
    caesar_id = caesar.json()["job_id"]
    assert page.locator(".upload.resumable.done").get_attribute("data-file-id") == fid
    cells = row.first.locator("td").all_inner_texts()
    assert cells[:5] == [
        "ScorpioS17Field.fits",
        "3.83 MiB",
        "1000 × 1000",
        "6.5 × 6.5",
        "RA---NCP, DEC--NCP",
    ]
    assert page.locator(".upload.done progress").get_attribute("value") == "100"
    page.screenshot(path=str(shot_path(tmp_path, "files")))

    page.click("a[data-screen=jobs]")
    options = [o for o in page.locator("#job-app option").all_inner_texts()]
    assert "sep" in options and "caesar-cpp" not in options  # available apps only
    page.select_option("#job-app", "sep")
    # The sep form, not the first app's (whose description may answer after sep is chosen).
    page.locator('#options[data-app="sep"] .field[data-option="seedthr"] input').wait_for()
    assert page.input_value("#opt-seedthr") == "5"
    page.fill("#opt-seedthr", "-5")
    # The server says no (400) and the page shows its message at the field.
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/job"), timeout=60_000
    ) as refused:
        page.click("#submit")
    assert refused.value.status == 400, refused.value.text()
    err = page.locator('.field[data-option="seedthr"] .error')
    err.filter(has_text="below").wait_for(timeout=60_000)
    assert err.inner_text() == "option 'seedthr' = -5.0 is below its minimum 0.0"
    page.screenshot(path=str(shot_path(tmp_path, "jobs-validation")))

    page.fill("#opt-seedthr", "6")
    page.click("#submit")
    page.wait_for_url(re.compile(r"#job/[0-9a-f]{32}$"))
    page.locator("#job-state", has_text="SUCCESS").wait_for(timeout=60_000)
    page.locator("#job-results a", has_text="catalog.json").wait_for()  # listed after the state
    results = page.locator("#job-results a").all_inner_texts()
    assert {"catalog.vot", "catalog.csv", "catalog.json"} <= set(results)
    assert "EXECUTING → COMPLETED success" in page.inner_text("#job-events")
    page.screenshot(path=str(shot_path(tmp_path, "job")))

    job_id = page.url.rsplit("/", 1)[1]
    # A second job on the same image (through the API) to compare with in the viewer.
    other = api.post("/job", json={"app": "sep", "data_inputs": fid, "job_inputs": {}})
    other_id = other.json()["job_id"]

    page.click("a[data-screen=jobs]")
    # Newest first, one job a page: the walk's job is the second, behind "Older jobs".
    newest = page.locator("#job-table tbody tr").first
    newest.wait_for()
    assert job_lists[0].endswith("/jobs?order=desc&limit=1")
    assert newest.get_attribute("data-id") == other_id
    page.click("#jobs-more")
    job_row = page.locator(f'#job-table tbody tr[data-id="{job_id}"]')
    job_row.wait_for()
    assert any("cursor=" in u for u in job_lists)  # the next page from the Link header
    assert job_row.get_attribute("data-state") == "SUCCESS"
    assert job_row.locator("td").nth(2).inner_text() == "ScorpioS17Field.fits"
    wait_success(api, other_id)

    page.goto(f"{server.url}/app/#job/{job_id}")
    page.click("#open-viewer")
    walk_viewer(page, tmp_path, job_id, other_id)
    check_samp_encoding(page)
    check_tus_metadata(page)
    wait_success(api, caesar_id)
    walk_islands(page, api, server, tmp_path, caesar_id)


def wait_success(api: httpx.Client, job_id: str, timeout: float = 120) -> None:
    """Poll the job until it has finished; it must succeed."""
    deadline = time.monotonic() + timeout
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


#: A point of island ``k``'s inside where the island itself is hit (not one of its ellipses).
_INSIDE = """(k) => {
  const p = document.querySelector(`#ov-i polygon[data-island="${k}"]`);
  const r = p.getBoundingClientRect();
  for (let i = 1; i < 24; i++) for (let j = 1; j < 24; j++) {
    const x = r.left + (r.width * i) / 24, y = r.top + (r.height * j) / 24;
    if (document.elementFromPoint(x, y) === p) return [x, y];
  }
  return null;
}"""


def walk_islands(
    page: Any, api: httpx.Client, server: LiveServer, tmp_path: Path, job_id: str
) -> None:
    """A caesar job: island contours over the image, hover and click show an island's row."""
    overlay = api.get(f"/job/{job_id}/overlay").json()
    contours, n = overlay["islands"]["contours"], len(overlay["sources"])
    page.goto(f"{server.url}/app/#viewer/{job_id}")
    page.locator("#v-title", has_text="caesar").wait_for()
    page.wait_for_function(
        f"document.querySelectorAll('#ov-i polygon.island').length == {len(contours)}"
    )
    assert len(contours) >= 50 and page.is_visible("#v-islands")
    assert page.inner_text("#cat-count") == f"{n} of {n} sources in {len(contours)} islands"

    # The largest island with several sources: hover, then a press and release inside it.
    def extent(c: dict[str, Any]) -> float:
        xs, ys = c["points"][0::2], c["points"][1::2]
        return float((max(xs) - min(xs)) * (max(ys) - min(ys)))

    k, c = max(
        ((i, c) for i, c in enumerate(contours) if len(c["rows"]) >= 2),
        key=lambda ic: extent(ic[1]),
    )
    point = page.evaluate(_INSIDE, k)
    assert point is not None
    page.mouse.move(*point)
    page.locator("#v-tip", has_text=f"island {c['name']}").wait_for()
    assert page.inner_text("#v-tip").startswith(f"island {c['name']} {len(c['rows'])} sources")
    page.mouse.click(*point)
    page.locator("#v-row h4", has_text="island").wait_for()
    assert page.inner_text("#v-row h4") == f"island {c['name']}"
    assert page.locator("#ov-i polygon.sel").get_attribute("data-island") == str(k)
    marked = page.locator("#cat-table tbody tr.in-island").evaluate_all(
        "(rows) => rows.map((r) => Number(r.dataset.row))"
    )
    assert sorted(marked) == c["rows"]
    assert page.locator("#ov-a ellipse.in-island").count() == len(c["rows"])
    island_row = overlay["islands"]["table"]["sources"][c["row"]]
    assert island_row["name"] in page.inner_text("#v-row table")  # its islands.json row
    page.screenshot(path=str(shot_path(tmp_path, "viewer-islands")))

    # A source's row links back to its island; the contours can be hidden.
    page.locator(f'#v-row a:text-is("{overlay["sources"][c["rows"][0]]["name"]}")').click()
    assert page.locator("#ov-i polygon.of-sel").get_attribute("data-island") == str(k)
    page.uncheck("#v-islands")
    assert not page.locator(f'#ov-i polygon[data-island="{k}"]').is_visible()


def check_tus_metadata(page: Any) -> None:
    """``Upload-Metadata`` as the server decodes it: base64 of UTF-8, empty values left out."""
    got = page.evaluate(
        """async () => (await import("./static/tus.js"))
        .encodeMetadata({ filename: "Feld \u03a9.fits", tag: "", note: "a,b" })"""
    )
    assert got == "filename RmVsZCDOqS5maXRz,note YSxi"


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


def test_a_late_description_does_not_replace_the_chosen_apps_form(
    server: LiveServer, browser: Any
) -> None:
    """The first app's description, asked at start, answers after another app is chosen and
    its option typed: the form stays the chosen app's, with what was typed."""
    page = new_page(browser, init=SETTINGS)
    held: list[Any] = []

    def hold_first(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)  # answered below, once sep's form is filled

    page.route("**/describe", hold_first)
    page.goto(f"{server.url}/app/")
    deadline = time.monotonic() + 20
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert held, "the page asked for no app description"
    first = page.locator("#job-app").input_value()
    assert first != "sep" and held[0].request.url.endswith(f"/app/{first}/describe")
    page.click("a[data-screen=jobs]")
    page.select_option("#job-app", "sep")
    page.locator('#options[data-app="sep"] #opt-seedthr').wait_for()
    page.fill("#opt-seedthr", "-5")
    with page.expect_response(lambda r: r.url == held[0].request.url):
        held[0].continue_()
    page.wait_for_timeout(300)  # the late answer's JSON parsed and (before the fix) rendered
    assert page.locator("#options").get_attribute("data-app") == "sep"
    assert page.input_value("#opt-seedthr") == "-5"
