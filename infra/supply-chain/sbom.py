"""Build the CycloneDX SBOMs of the project's dependencies and check them (`make sbom`).

* `sbom/python.cdx.json`: `cyclonedx-py poetry` (CycloneDX's own generator, package cyclonedx-bom)
  from `pyproject.toml` + `poetry.lock`: every locked package of the main and dev groups, with its
  version, purl, licence, group (`cdx:poetry:group`), the SHA-256 of each locked distribution
  file and the dependency graph. The lock, not `.venv`: it is exactly what `make setup` installs
  (plus the packages of other platforms, e.g. pywin32), whatever was added to `.venv` by hand.
* `sbom/ui.cdx.json`: `npm sbom` (npm >= 9.5) from `ui/package-lock.json`, or CycloneDX's
  `@cyclonedx/cyclonedx-npm` through npx where npm has no `sbom` command (Debian's npm 9.2).

Each file is then checked: valid JSON, `bomFormat` "CycloneDX", at least one component, and valid
against the CycloneDX JSON schema of its `specVersion` (the strict schema that
cyclonedx-python-lib ships). The `iri`/`iri-reference` formats are not checked: their checker
(rfc3987-syntax, a lark grammar) takes ~110 s on the ~3,600 distribution URLs of the Python SBOM,
which is why `cyclonedx-py --validate` is turned off in favour of this check (0.4 s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cyclonedx.schema import SchemaVersion
from cyclonedx.schema._res import BOM_JSON_STRICT, CRYPTOGRAPHY_DEFS, JSF, SPDX_JSON
from jsonschema import FormatChecker
from jsonschema.validators import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "ui"
CYCLONEDX_NPM = "@cyclonedx/cyclonedx-npm@6.0.1"  # only where npm has no `sbom` command
SLOW_FORMATS = frozenset({"iri", "iri-reference"})


class SbomError(Exception):
    pass


def build_python(out: Path) -> None:
    cmd = [
        str(Path(sys.executable).parent / "cyclonedx-py"),
        "poetry",
        "--mc-type",
        "application",
        "--spec-version",
        "1.6",
        "--output-reproducible",
        "--no-validate",  # checked below, 250x faster
        "--output-file",
        str(out),
        str(ROOT),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SbomError(f"cyclonedx-py failed ({done.returncode}):\n{done.stderr.strip()}")


def build_ui(out: Path) -> None:
    npm = ["npm", "sbom", "--sbom-format", "cyclonedx", "--package-lock-only"]
    done = subprocess.run(npm, cwd=UI, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        out.write_text(done.stdout)
        return
    if "Unknown command" not in done.stdout + done.stderr:  # npm < 9.5 (Debian 12: 9.2)
        raise SbomError(f"npm sbom failed ({done.returncode}):\n{done.stderr.strip()}")
    npx = ["npx", "--yes", CYCLONEDX_NPM, "--package-lock-only", "--output-format", "JSON"]
    done = subprocess.run(
        [*npx, "--output-file", str(out)], cwd=UI, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SbomError(f"cyclonedx-npm failed ({done.returncode}):\n{done.stderr.strip()}")


def _validator(spec_version: str) -> Draft7Validator:
    try:
        schema_file = BOM_JSON_STRICT.get(SchemaVersion.from_version(spec_version))
    except ValueError:
        schema_file = None
    if schema_file is None:
        raise SbomError(f"no CycloneDX JSON schema for specVersion {spec_version!r}")
    prefix = "http://cyclonedx.org/schema/"
    registry: Registry[Any] = Registry().with_resources(
        (prefix + Path(path).name, _resource(path)) for path in (SPDX_JSON, JSF, CRYPTOGRAPHY_DEFS)
    )
    formats = [f for f in Draft7Validator.FORMAT_CHECKER.checkers if f not in SLOW_FORMATS]
    schema = json.loads(Path(schema_file).read_text())
    return Draft7Validator(schema, registry=registry, format_checker=FormatChecker(formats))


def _resource(path: str) -> Resource[Any]:
    return DRAFT7.create_resource(json.loads(Path(path).read_text()))


def check(path: Path) -> dict[str, Any]:
    """The SBOM at `path`, parsed, once it is a schema-valid CycloneDX BOM with components."""
    try:
        bom = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SbomError(f"{path}: not readable JSON: {exc}") from exc
    if not isinstance(bom, dict) or bom.get("bomFormat") != "CycloneDX":
        raise SbomError(f"{path}: bomFormat is not CycloneDX")
    if not bom.get("components"):
        raise SbomError(f"{path}: no components")
    errors = sorted(_validator(str(bom.get("specVersion"))).iter_errors(bom), key=str)
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path)
        raise SbomError(
            f"{path}: {len(errors)} schema error(s), first at /{where}: {first.message}"
        )
    return bom


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def build(out_dir: Path) -> dict[str, dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    python, ui = out_dir / "python.cdx.json", out_dir / "ui.cdx.json"
    build_python(python)
    build_ui(ui)
    boms: dict[str, dict[str, Any]] = {}
    for path, source in ((python, "poetry.lock"), (ui, "ui/package-lock.json")):
        bom = boms[path.name] = check(path)
        print(
            f"{_shown(path)}: CycloneDX {bom['specVersion']}, {len(bom['components'])} components "
            f"from {source}, schema-valid"
        )
    return boms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "sbom")
    args = parser.parse_args(argv)
    try:
        build(args.out_dir.resolve())
    except SbomError as exc:
        print(f"sbom: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
