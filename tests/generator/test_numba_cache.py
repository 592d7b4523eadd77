"""The generator's numba cache is dropped whenever any compiled source changes."""

from __future__ import annotations

from pathlib import Path

from generator.numba_cache import COMPILED_SOURCES, drop_if_stale


def package(tmp_path: Path) -> Path:
    for name in COMPILED_SOURCES:
        (tmp_path / name).write_text(f"# {name}\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    for name in ("events._add-1.py311.nbi", "events._add-1.py311.1.nbc", "other.cpython-311.pyc"):
        (cache / name).write_bytes(b"x")
    return tmp_path


def cached(pkg: Path) -> list[str]:
    return sorted(p.name for p in (pkg / "__pycache__").iterdir() if p.suffix in (".nbi", ".nbc"))


def test_a_cache_of_unknown_origin_is_dropped_then_kept(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    assert drop_if_stale(pkg)
    assert cached(pkg) == [] and (pkg / "__pycache__" / "other.cpython-311.pyc").exists()
    (pkg / "__pycache__" / "events._add-1.py311.nbi").write_bytes(b"x")  # numba rebuilt it
    assert not drop_if_stale(pkg)
    assert cached(pkg) == ["events._add-1.py311.nbi"]


def test_editing_a_callee_drops_the_callers_cache(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    drop_if_stale(pkg)
    (pkg / "__pycache__" / "events._add-1.py311.nbi").write_bytes(b"x")
    (pkg / "flow.py").write_text("# flow.py, edited\n")
    assert drop_if_stale(pkg)
    assert cached(pkg) == []
