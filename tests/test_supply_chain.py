"""The SBOMs (`make sbom`) and `make audit` (infra/supply-chain/).

The audit's databases are out of reach of our machines, so the paths where they answer run
against small local stand-ins (an OSV endpoint, an npm registry's bulk advisory endpoint) on the
loopback interface; a closed loopback port plays the unreachable database.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "infra" / "supply-chain"

pytestmark = pytest.mark.timeout(120)


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def sbom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sbom")
    done = _run("sbom.py", "--out-dir", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _components(bom: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in bom["components"]}


def test_python_sbom_is_the_lock(sbom_dir: Path) -> None:
    bom = json.loads((sbom_dir / "python.cdx.json").read_text())
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["metadata"]["component"]["name"] == "mbo-pipeline"
    components = _components(bom)
    lock = (ROOT / "poetry.lock").read_text()
    locked = {line.split('"')[1] for line in lock.splitlines() if line.startswith("name = ")}
    assert set(components) == locked
    groups = {p["value"] for c in components.values() for p in c.get("properties", [])}
    assert {"main", "dev"} <= groups
    assert components["numpy"]["purl"].startswith("pkg:pypi/numpy@")
    assert any(ref.get("hashes") for ref in components["numpy"]["externalReferences"])


def test_ui_sbom_is_the_package_lock(sbom_dir: Path) -> None:
    bom = json.loads((sbom_dir / "ui.cdx.json").read_text())
    assert bom["bomFormat"] == "CycloneDX"
    lock = json.loads((ROOT / "ui" / "package-lock.json").read_text())
    locked = {path.rsplit("node_modules/", 1)[1] for path in lock["packages"] if path}
    assert set(_components(bom)) == locked
    assert "lightweight-charts" in locked


def test_a_broken_sbom_is_rejected(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("sbom", SCRIPTS / "sbom.py")
    assert spec is not None and spec.loader is not None
    sbom = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sbom)
    bad = tmp_path / "bad.cdx.json"
    for text, message in (
        ("{", "not readable JSON"),
        ('{"bomFormat": "SPDX"}', "bomFormat"),
        ('{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": []}', "no components"),
        (
            '{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{"name": "x"}]}',
            "schema error",
        ),
    ):
        bad.write_text(text)
        with pytest.raises(sbom.SbomError, match=message):
            sbom.check(bad)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Databases(BaseHTTPRequestHandler):
    """OSV's /v1/query and npm's bulk advisories, with `vulnerable` names flagged."""

    vulnerable: ClassVar[set[str]] = set()
    queries: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":  # npm's
            raw = gzip.decompress(raw)
        body = json.loads(raw)
        answer: dict[str, Any]
        if self.path == "/v1/query":
            name = body["package"]["name"]
            self.queries.append(name)
            answer = {}
            if name in self.vulnerable:
                affected = {"package": {"name": name, "ecosystem": "PyPI"}, "ranges": []}
                answer = {"vulns": [{"id": "PYSEC-0000-1", "affected": [affected]}]}
        elif self.path.endswith("/-/npm/v1/security/advisories/bulk"):
            self.queries.extend(body)
            answer = {
                name: [
                    {
                        "id": 1,
                        "url": "http://127.0.0.1/advisory/1",
                        "title": "test advisory",
                        "severity": "high",
                        "vulnerable_versions": "<99",
                        "cwe": [],
                        "cvss": {"score": 7.5, "vectorString": None},
                    }
                ]
                for name in body
                if name in self.vulnerable
            }
        else:
            self.send_error(404)
            return
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # npm asks for packuments to work out fixes: none here
        self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def databases() -> Iterator[str]:
    _Databases.vulnerable = set()
    _Databases.queries = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Databases)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_databases_are_never_a_clean_result(sbom_dir: Path) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    done = _run(
        "audit.py",
        *("--sbom-dir", str(sbom_dir), "--service", "osv", "--osv-url", f"{dead}/v1/query"),
        *("--npm-registry", f"{dead}/", "--probe-timeout", "2"),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout
    assert "pip-audit: SKIPPED — vulnerability database unreachable" in out
    assert "npm audit: SKIPPED — vulnerability database unreachable" in out
    assert out.count("nothing was checked") == 2
    assert "no known vulnerabilities" not in out
    assert "NOT CHECKED" in out.splitlines()[-1]


def test_this_machine_says_plainly_what_it_could_check(sbom_dir: Path) -> None:
    """The real databases: on our machines out of reach, so exit 2 and SKIPPED, never clean."""
    done = _run("audit.py", "--sbom-dir", str(sbom_dir))
    out = done.stdout
    assert done.returncode in (0, 1, 2), done.stderr
    for tool in ("pip-audit", "npm audit"):
        ran = [line for line in out.splitlines() if line.startswith(tool)]
        assert len(ran) == 1, out
        if "SKIPPED" in ran[0] or "INCOMPLETE" in ran[0] or "FAILED" in ran[0]:
            assert done.returncode != 0, out
            assert "no known vulnerabilities" not in ran[0]
    if done.returncode == 0:
        assert out.count("no known vulnerabilities") == 2, out


def test_audits_that_ran_report_findings(sbom_dir: Path, databases: str) -> None:
    common = ["--sbom-dir", str(sbom_dir), "--service", "osv", "--osv-url", f"{databases}/v1/query"]
    common += ["--npm-registry", f"{databases}/"]

    clean = _run("audit.py", *common)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "pip-audit (osv): no known vulnerabilities in the" in clean.stdout
    assert "npm audit: no known vulnerabilities in the 3 packages" in clean.stdout
    python = json.loads((sbom_dir / "python.cdx.json").read_text())
    locked = {_canonical(c["name"]) for c in python["components"]}
    assert {_canonical(name) for name in _Databases.queries} >= locked | {"lightweight-charts"}

    _Databases.vulnerable = {"orjson", "lightweight-charts"}
    found = _run("audit.py", *common)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "pip-audit (osv): 1 known vulnerabilities in 1 packages" in found.stdout
    assert re.search(r"^  orjson [0-9.]+: PYSEC-0000-1$", found.stdout, re.MULTILINE)
    assert "npm audit: 1 vulnerable packages (1 high)" in found.stdout
    assert "VULNERABLE" in found.stdout.splitlines()[-1]
