"""The import rules of docs/architecture.md, checked on the source: every import statement of
every module (at the top, inside functions and under TYPE_CHECKING alike).

1. A stage (producer, book_processor, sink, api) imports mbo_core and itself, never another
   stage: each can be read, deployed and replaced on its own. mbo_cli, the composition root,
   is the one place that wires stages together.
2. mbo_core imports no stage, no mbo_cli and no tool package (generator, bench, tests);
   generator imports mbo_core and itself only.
3. The pure modules of mbo_core (the book engine, the wire formats, records, prices, quality
   counters, output schemas, errors, the offline book rebuild) import no I/O: no other mbo_core
   module (Kafka, storage, settings, logs, metrics, files) and no library that talks to the
   network, disks or processes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("producer", "book_processor", "sink", "api")
PROJECT = ("mbo_core", "mbo_cli", "generator", "bench", "tests", *STAGES)
#: Modules (or packages) of mbo_core with no I/O, and the only project modules they may import.
PURE = (
    "mbo_core.book",
    "mbo_core.wire",
    "mbo_core.records",
    "mbo_core.prices",
    "mbo_core.quality",
    "mbo_core.schemas",
    "mbo_core.errors",
    "mbo_core.rebuild",
)
#: Standard-library and third-party modules that do I/O or run an I/O framework.
IO_LIBRARIES = frozenset(
    {
        "aiokafka", "asyncio", "chdb", "clickhouse_connect", "databento", "fastapi", "faust",
        "fcntl", "http", "httpx", "kafka", "mode", "os", "pathlib", "prometheus_client",
        "pydantic_settings", "requests", "selectors", "shutil", "signal", "socket", "sqlite3",
        "ssl", "starlette", "subprocess", "tempfile", "urllib", "uvicorn", "zstandard",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted (absolute)
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def imports_of(root: Path, package: str) -> Iterator[Import]:
    """Every import statement in the modules of root/package (relative imports resolved)."""
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        module = ".".join(parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = parts if is_package else parts[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from package import module` imports package.module when that is a module.
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    is_module = (root / Path(*candidate.split("."))).with_suffix(".py").exists()
                    is_subpackage = (root / Path(*candidate.split(".")) / "__init__.py").exists()
                    yield Import(
                        module, candidate if is_module or is_subpackage else base, node.lineno
                    )


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Every import that breaks a rule of the module docstring, as 'module:line imports x (why)'."""
    found: list[str] = []
    for stage in STAGES:
        for item in imports_of(root, stage):
            top = _top(item.target)
            if top in PROJECT and top not in (stage, "mbo_core"):
                found.append(f"{item} (a stage imports only mbo_core and itself)")
    for item in imports_of(root, "mbo_core"):
        if _top(item.target) in PROJECT and _top(item.target) != "mbo_core":
            found.append(f"{item} (mbo_core imports no stage, CLI or tool)")
        if any(_within(item.module, pure) for pure in PURE):
            if _top(item.target) == "mbo_core":
                if not any(_within(item.target, pure) for pure in PURE):
                    found.append(f"{item} (a pure module imports only pure modules)")
            elif _top(item.target) in IO_LIBRARIES:
                found.append(f"{item} (a pure module does no I/O)")
    for item in imports_of(root, "generator"):
        if _top(item.target) in PROJECT and _top(item.target) not in ("generator", "mbo_core"):
            found.append(f"{item} (the generator imports only mbo_core and itself)")
    return found


def test_the_project_keeps_its_import_rules() -> None:
    assert violations(REPO) == []


def test_every_pure_module_exists() -> None:
    """A renamed module must not silently leave the rule (it would check nothing)."""
    for pure in PURE:
        path = REPO / Path(*pure.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), pure


@pytest.mark.parametrize(
    ("path", "source", "broken"),
    [
        ("api/routes.py", "from sink.app import run_sink\n", "a stage imports only mbo_core"),
        ("sink/app.py", "def f():\n    import producer.app\n", "a stage imports only mbo_core"),
        ("mbo_core/x.py", "from api import app\n", "mbo_core imports no stage"),
        ("mbo_core/book/x.py", "from mbo_core.kafka import clients\n", "only pure modules"),
        ("mbo_core/wire/x.py", "from ..settings import Settings\n", "only pure modules"),
        ("mbo_core/wire/x.py", "import asyncio\n", "a pure module does no I/O"),
        ("generator/x.py", "from producer import app\n", "the generator imports only"),
    ],
)
def test_a_broken_rule_is_reported(tmp_path: Path, path: str, source: str, broken: str) -> None:
    for package in PROJECT:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "mbo_core" / "book").mkdir()
    (tmp_path / "mbo_core" / "book" / "__init__.py").write_text("")
    (tmp_path / "mbo_core" / "wire").mkdir()
    (tmp_path / "mbo_core" / "wire" / "__init__.py").write_text("")
    (tmp_path / "mbo_core" / "kafka").mkdir()
    (tmp_path / "mbo_core" / "kafka" / "clients.py").write_text("")
    (tmp_path / "mbo_core" / "settings.py").write_text("")
    (tmp_path / path).write_text(source)
    (found,) = violations(tmp_path)
    assert found.startswith(path.removesuffix(".py").replace("/", "."))
    assert broken in found
