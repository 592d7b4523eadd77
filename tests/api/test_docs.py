"""/docs and /redoc work without internet: their JavaScript and CSS are served by the API."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from tests.api.pipeline import run_async, serve
from tests.conftest import make_settings
from tests.paths import REPO


def _app(tmp_path: Path) -> FastAPI:
    return create_app(make_settings(data_dir=tmp_path), consume=False)


def test_the_docs_pages_use_only_assets_the_api_serves(tmp_path: Path) -> None:
    app = _app(tmp_path)

    async def fetch() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            pages = {path: await http.get(path) for path in ("/docs", "/redoc")}
            assets = {}
            for page in pages.values():
                for url in re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text):
                    assets[url] = await http.get(url)
            return {**pages, **assets}

    responses = run_async(fetch())
    for path in ("/docs", "/redoc"):
        assert responses[path].status_code == 200
        assert "cdn" not in responses[path].text and "https://" not in responses[path].text
    assets = {url: r for url, r in responses.items() if url not in ("/docs", "/redoc")}
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css",
            "/docs/assets/redoc.standalone.js"} <= set(assets)  # fmt: skip
    for url, response in assets.items():
        assert url.startswith("/docs/assets/"), url
        assert response.status_code == 200 and len(response.content) > 1000, url


@pytest.mark.integration
def test_the_docs_render_in_chromium_with_the_network_cut_off(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (REPO / "ui" / "node_modules" / "playwright-core").is_dir():
        pytest.fail("needs Node.js and `cd ui && npm ci` (playwright-core), as the UI test does")
    settings = make_settings(data_dir=tmp_path)
    with serve(create_app(settings, consume=False), settings) as served:
        done = subprocess.run(
            [node, str(REPO / "ui" / "tests" / "docs.mjs"), "--url", served.base],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["swagger_title"].startswith("mbo-pipeline API")
    assert summary["redoc_title"].startswith("mbo-pipeline API")
    assert summary["swagger_operations"] > 10 and summary["redoc_operations"] > 10
