"""The web application in a real browser (Debian's headless Chromium through Playwright)."""

from __future__ import annotations

import re
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

        page.click("a[data-screen=jobs]")  # type: ignore[attr-defined]
        job_row = page.locator("#job-table tbody tr").first  # type: ignore[attr-defined]
        job_row.wait_for()
        assert job_row.get_attribute("data-state") == "SUCCESS"
        assert job_row.locator("td").nth(2).inner_text() == "ScorpioS17Field.fits"
