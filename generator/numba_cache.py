"""Keeping numba's on-disk cache of the generator honest.

numba (cache=True) revalidates a cached function against its own source file only, not against
the files of the functions it calls and compiles in. The event loop (events.py) calls into
flow.py and matching.py, so editing one of those would silently keep running the old code
through events.py's cache. Before anything is compiled or loaded, `drop_if_stale` compares a
digest of all the generator's compiled sources with the one the cache was built from and, when
they differ, deletes the generator's cache files so everything is compiled afresh (once).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
COMPILED_SOURCES = ("flow.py", "matching.py", "events.py")
_STAMP = "generator-sources.sha256"


def sources_digest(package: Path = PACKAGE) -> str:
    digest = hashlib.sha256()
    for name in COMPILED_SOURCES:
        digest.update((package / name).read_bytes())
    return digest.hexdigest()


def drop_if_stale(package: Path = PACKAGE) -> bool:
    """Delete the package's numba cache files if they were built from other sources; whether
    it did. A read-only install is left alone (it cannot be stale: nobody edits it)."""
    cache = package / "__pycache__"
    stamp = cache / _STAMP
    digest = sources_digest(package)
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass  # no stamp yet: a cache without one may predate any edit, drop it too
    try:
        for path in cache.glob("*.nb[ci]"):
            path.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        return False
    return True
