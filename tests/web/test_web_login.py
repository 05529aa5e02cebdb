"""Logging in to the web application through the real OIDC provider (authorization code + PKCE).

The provider (tests/support/oidc, npm oidc-provider) has a public client ``caesar-web`` and its
development login form, where the login name becomes the user (``sub``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.oidc_provider import OIDCProvider, auth_env
from tests.support.paths import SHARED_DATA
from tests.support.server import LiveServer
from tests.support.web import chromium, new_page, require_chromium, shot_path

IMAGE = SHARED_DATA / "ScorpioS17Field.fits"


@pytest.fixture(scope="module")
def server(oidc: OIDCProvider, tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_chromium()
    env = auth_env(oidc, CAESAR_REST_OIDC_WEB_CLIENT_ID="caesar-web")
    srv = LiveServer(tmp_path_factory.mktemp("web-login"), **env).start()
    yield srv
    srv.stop()


def log_in(page: Any, server: LiveServer, user: str) -> str:
    """Walk the provider's login and consent pages; the app's access token."""
    page.goto(f"{server.url}/app/")
    page.locator("#login-screen").wait_for()
    page.click("#login-screen button")
    page.wait_for_url(re.compile(r"/interaction/"))
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.locator("button[type=submit]", has_text="Continue").click()  # consent
    page.wait_for_url(f"{server.url}/app/")  # the code and state are gone from the URL
    page.locator("#who", has_text=user).wait_for()
    token: str = page.evaluate(
        "JSON.parse(sessionStorage.getItem('caesar-rest.auth')).access_token"
    )
    return token


def test_login_walk_and_a_second_user_sees_nothing(server: LiveServer, tmp_path: Path) -> None:
    with chromium() as browser:
        page = new_page(browser)
        page.goto(f"{server.url}/app/")
        page.locator("#login-screen").wait_for()
        page.screenshot(path=str(shot_path(tmp_path, "login")))
        token = log_in(page, server, "web-alice")
        assert "code=" not in page.url and "state=" not in page.url
        assert page.evaluate("history.length") >= 1

        page.set_input_files("#file-input", str(IMAGE))
        page.locator("#file-table tbody tr").first.wait_for()
        with page.expect_response(lambda r: "/jobs?" in r.url) as listed:
            page.click("a[data-screen=jobs]")
        assert listed.value.url.endswith("/jobs?order=desc&limit=100")  # the default page
        page.select_option("#job-app", "sep")
        page.locator('#options[data-app="sep"] #opt-seedthr').wait_for()
        page.click("#submit")
        page.wait_for_url(re.compile(r"#job/[0-9a-f]{32}$"))
        page.locator("#job-state", has_text="SUCCESS").wait_for(timeout=60_000)
        page.click("#open-viewer")
        page.locator("#v-title", has_text="59 sources").wait_for()
        page.wait_for_function("document.querySelectorAll('#ov-a ellipse').length == 59")
        page.wait_for_function("document.querySelectorAll('#tiles img.tile[src]').length >= 4")
        page.locator('#ov-a ellipse[data-row="0"]').click(force=True)
        assert page.locator('#cat-table tr.sel[data-row="0"]').count() == 1
        page.screenshot(path=str(shot_path(tmp_path, "viewer-logged-in")))

        api = httpx.Client(base_url=server.api, timeout=10)
        mine = api.get("/fileids", headers={"Authorization": f"Bearer {token}"}).json()
        assert [f["filename_orig"] for f in mine] == ["ScorpioS17Field.fits"]
        assert token not in server.log.read_text()  # never logged
        page.click("#logout")
        page.locator("button", has_text=re.compile("sign me out", re.I)).click()
        page.locator("#login-screen").wait_for()
        assert page.evaluate("sessionStorage.getItem('caesar-rest.auth')") is None

        # A second user, in a fresh browser context (no cookies, no session storage).
        page = new_page(browser)
        bob = log_in(page, server, "web-bob")
        assert page.locator("#file-table tbody tr").count() == 0
        with page.expect_response(lambda r: "/jobs?" in r.url) as listed:
            page.click("a[data-screen=jobs]")
        assert listed.value.ok and listed.value.json() == []
        page.wait_for_function("!document.querySelector('#jobs').hidden")
        assert page.locator("#job-table tbody tr").count() == 0
        headers = {"Authorization": f"Bearer {bob}"}
        assert api.get("/fileids", headers=headers).json() == []
        assert api.get("/jobs", headers=headers).json() == []
        r = api.get(f"/file/{mine[0]['fileid']}/image", headers=headers)
        assert r.status_code == 404
