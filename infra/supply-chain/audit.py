"""Audit the dependencies in the SBOMs for known vulnerabilities (`make audit`).

* Python: pip-audit (PyPA) over exactly the packages of `sbom/python.cdx.json` (= poetry.lock,
  main + dev groups), pinned, no resolution (`--no-deps --disable-pip`), against the PyPI JSON API
  or, where that does not answer, OSV.
* npm: `npm audit --package-lock-only` in ui/ against the registry's bulk advisory endpoint.

Each audit runs only after a probe of its database (one real query, PROBE_TIMEOUT seconds) got a
real answer; otherwise it is reported as SKIPPED with what the probe saw, and nothing is claimed
about those packages. A pip-audit run that skipped any package (e.g. one the database does not
know) is reported as incomplete, not clean.

Exit status: 0 only when both audits ran over every package and found nothing; 1 when a
vulnerability was found (whatever else happened); 2 when an audit could not run or was
incomplete. (`make audit` itself exits 2 on any non-zero status: GNU make's failure code.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "ui"
PROBE_TIMEOUT = 5.0
PYPI_JSON = "https://pypi.org/pypi/{name}/{version}/json"  # what pip-audit's "pypi" service reads
OSV_URL = "https://api.osv.dev/v1/query"  # pip-audit's default --osv-url
EXIT_CLEAN, EXIT_VULNERABLE, EXIT_UNCHECKED = 0, 1, 2

Status = Literal["clean", "vulnerable", "unchecked"]


@dataclass
class Outcome:
    status: Status
    lines: list[str]


def probe(url: str, body: dict[str, Any] | None, timeout: float) -> tuple[Any, str]:
    """(parsed JSON answer, "") when `url` answers with JSON, else (None, what went wrong)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:120].decode(errors="replace").strip() or "empty body"
        return None, f"HTTP {exc.code} ({detail})"
    except urllib.error.URLError as exc:
        return None, f"cannot connect ({exc.reason})"
    except TimeoutError:
        return None, f"no answer within {timeout:g} s"
    except OSError as exc:
        return None, f"cannot connect ({exc})"
    try:
        return json.loads(raw), ""
    except ValueError:
        return None, f"answered, but not with JSON ({raw[:80]!r})"


def _skipped(tool: str, what: str, reasons: list[str]) -> Outcome:
    return Outcome(
        "unchecked",
        [
            f"{tool}: SKIPPED — vulnerability database unreachable from this machine; "
            f"nothing was checked ({what} NOT audited)",
            *(f"  {reason}" for reason in reasons),
        ],
    )


def _pypi_packages(sbom: Path) -> list[tuple[str, str]]:
    bom = json.loads(sbom.read_text())
    return sorted(
        (c["name"], c["version"])
        for c in bom.get("components", [])
        if str(c.get("purl", "")).startswith("pkg:pypi/")
    )


def _batches(packages: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """`packages` cut so that no name is twice in one batch: the lock may pin two versions of a
    package for different Pythons (numpy), and pip-audit refuses duplicate requirements."""
    batches: list[list[tuple[str, str]]] = []
    for package in packages:
        batch = next((b for b in batches if package[0] not in dict(b)), None)
        if batch is None:
            batch = []
            batches.append(batch)
        batch.append(package)
    return batches


def _pip_audit(
    packages: list[tuple[str, str]], service: str, osv_url: str
) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report on the pinned `packages`, or (None, why it has none)."""
    with tempfile.TemporaryDirectory(prefix="mbo-audit-") as tmp:
        requirements, report = Path(tmp) / "requirements.txt", Path(tmp) / "report.json"
        requirements.write_text("".join(f"{n}=={v}\n" for n, v in packages))
        cmd = [sys.executable, "-m", "pip_audit", "--requirement", str(requirements)]
        cmd += ["--no-deps", "--disable-pip", "--strict", "--progress-spinner", "off"]
        cmd += ["--vulnerability-service", service, "--osv-url", osv_url]
        cmd += ["--format", "json", "--output", str(report)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            return json.loads(report.read_text()), ""
        except (OSError, ValueError):
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"(exit {done.returncode}): {tail}"


def audit_python(sbom: Path, service: str, osv_url: str, timeout: float) -> Outcome:
    packages = _pypi_packages(sbom)
    if not packages:
        return Outcome("unchecked", [f"pip-audit: SKIPPED — no PyPI packages in {sbom}"])
    what = f"the {len(packages)} packages of poetry.lock"
    sample = dict(packages)
    name = "pip-audit" if "pip-audit" in sample else packages[0][0]
    probe_pkg = {"name": name, "version": sample[name]}
    reasons: list[str] = []
    chosen = None
    if service in ("auto", "pypi"):
        url = PYPI_JSON.format(**probe_pkg)
        answer, problem = probe(url, None, timeout)
        if isinstance(answer, dict) and isinstance(answer.get("vulnerabilities"), list):
            chosen = "pypi"
        else:
            reasons.append(f"PyPI JSON API {url}: {problem or 'no vulnerabilities field'}")
    if chosen is None and service in ("auto", "osv"):
        query = {"package": {"name": name, "ecosystem": "PyPI"}, "version": probe_pkg["version"]}
        answer, problem = probe(osv_url, query, timeout)
        if isinstance(answer, dict):
            chosen = "osv"
        else:
            reasons.append(f"OSV {osv_url}: {problem or 'not a JSON object'}")
    if chosen is None:
        return _skipped("pip-audit", what, reasons)

    deps: list[dict[str, Any]] = []
    for batch in _batches(packages):
        result, failure = _pip_audit(batch, chosen, osv_url)
        if result is None:
            return Outcome("unchecked", [f"pip-audit: FAILED {failure} — {what} NOT audited"])
        deps += result.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if "skip_reason" in d]
    lines = [
        f"  {d['name']} {d['version']}: {v['id']}"
        + (f" (fixed in {', '.join(v['fix_versions'])})" if v.get("fix_versions") else "")
        for d in vulnerable
        for v in d["vulns"]
    ]
    lines += [f"  {d['name']}: not checked: {d['skip_reason']}" for d in skipped]
    if vulnerable:
        count = sum(len(d["vulns"]) for d in vulnerable)
        head = f"pip-audit ({chosen}): {count} known vulnerabilities in {len(vulnerable)} packages"
        return Outcome("vulnerable", [head, *lines])
    if skipped or len(deps) != len(packages):
        head = (
            f"pip-audit ({chosen}): INCOMPLETE — {len(deps) - len(skipped)} of {len(packages)} "
            "packages checked, none vulnerable; the rest were NOT audited"
        )
        return Outcome("unchecked", [head, *lines])
    return Outcome(
        "clean", [f"pip-audit ({chosen}): no known vulnerabilities in {what} ({len(deps)} checked)"]
    )


def _npm_registry() -> str:
    done = subprocess.run(
        ["npm", "config", "get", "registry"], cwd=UI, capture_output=True, text=True, check=False
    )
    registry = done.stdout.strip() or "https://registry.npmjs.org/"
    return registry if registry.endswith("/") else registry + "/"


def audit_npm(sbom: Path, registry: str | None, timeout: float) -> Outcome:
    bom = json.loads(sbom.read_text())
    components = [c for c in bom.get("components", []) if c.get("version")]
    what = f"the {len(components)} packages of ui/package-lock.json"
    if not components:
        return Outcome("unchecked", [f"npm audit: SKIPPED — no packages in {sbom}"])
    registry = registry or _npm_registry()
    url = registry + "-/npm/v1/security/advisories/bulk"
    first = components[0]
    answer, problem = probe(url, {first["name"]: [first["version"]]}, timeout)
    if not isinstance(answer, dict):
        return _skipped("npm audit", what, [f"npm bulk advisories {url}: {problem or 'not JSON'}"])
    cmd = ["npm", "audit", "--json", "--package-lock-only", f"--registry={registry}"]
    done = subprocess.run(cmd, cwd=UI, capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout)
        counts = report["metadata"]["vulnerabilities"]
        total = int(counts["total"])
    except (ValueError, KeyError, TypeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Outcome(
            "unchecked",
            [f"npm audit: FAILED (exit {done.returncode}) — {what} NOT audited: {tail}"],
        )
    if total:
        lines = [
            f"  {name}: {entry.get('severity')} ({entry.get('range', '?')})"
            for name, entry in sorted(report.get("vulnerabilities", {}).items())
        ]
        by_severity = ", ".join(f"{n} {s}" for s, n in counts.items() if s != "total" and n)
        return Outcome(
            "vulnerable", [f"npm audit: {total} vulnerable packages ({by_severity})", *lines]
        )
    return Outcome("clean", [f"npm audit: no known vulnerabilities in {what}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sbom-dir", type=Path, default=ROOT / "sbom")
    parser.add_argument("--service", choices=("auto", "pypi", "osv"), default="auto")
    parser.add_argument("--osv-url", default=OSV_URL)
    parser.add_argument("--npm-registry", default=None, help="default: npm's configured one")
    parser.add_argument("--probe-timeout", type=float, default=PROBE_TIMEOUT)
    args = parser.parse_args(argv)

    outcomes: list[Outcome] = []
    for name in ("python", "ui"):
        sbom: Path = args.sbom_dir / f"{name}.cdx.json"
        if not sbom.is_file():
            outcome = Outcome("unchecked", [f"{sbom}: missing (run `make sbom`); NOT audited"])
        elif name == "python":
            outcome = audit_python(sbom, args.service, args.osv_url, args.probe_timeout)
        else:
            outcome = audit_npm(sbom, args.npm_registry, args.probe_timeout)
        outcomes.append(outcome)
        print("\n".join(outcome.lines), flush=True)

    statuses = {o.status for o in outcomes}
    if "vulnerable" in statuses:
        code, verdict = EXIT_VULNERABLE, "VULNERABLE — known vulnerabilities found"
    elif "unchecked" in statuses:
        unchecked = sum(o.status == "unchecked" for o in outcomes)
        code = EXIT_UNCHECKED
        verdict = (
            f"NOT CHECKED — {unchecked} of {len(outcomes)} audits did not run completely; "
            "this is not a clean result"
        )
    else:
        code, verdict = EXIT_CLEAN, "clean — both audits ran and found no known vulnerabilities"
    print(f"audit: {verdict} (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
