"""Checkpoints of a partition's books, so that a restarted worker does not re-read it all.

Without a checkpoint a worker that takes a partition re-reads it from offset 0 (book_processor.app),
at 250-350k records/s on this project's machine (bench.checkpoint): minutes for a day of a busy
instrument. A checkpoint is the pickled `BookPublisher` of one records partition after the
message at `next_offset - 1`, with a fingerprint of that message. The publisher is the
partition's whole state and its output depends only on its input, so a restored publisher is in
exactly the state a rebuild from offset 0 reaches and what it publishes next is byte-identical.

A checkpoint is only a shortcut and is never trusted blindly: it is skipped, and the partition
rebuilt from an older one or from offset 0, when it was written by other code (a hash of the
code that defines the state), for another records topic, partition, snapshot interval or depth,
when it does not load, or when the records topic's message at its offset is not the one it
fingerprinted (the topic was deleted and created again, or the broker's storage was: `mbo run
--fresh` does that). The fingerprint tells two incarnations of a topic apart because every
records message carries the wall-clock time the producer sent it (the `sent-ns` header).

Files: `<data dir>/processor/<group id>/checkpoints/<records topic>/<partition>/<next offset>.ckpt`,
a JSON header line (with a hash of the body) then the pickle, written under a temporary name,
synced and renamed, in directories only the processor may read; the newest
`KEEP` of each partition stay, and one whose message is not in the topic is removed. They are
local: a worker restarted on the same machine (the supervisor of `mbo run`, a container restart
in the same pod or compose service) resumes from them; a partition that moves to another machine
is rebuilt from offset 0. Pickle runs code from the file it loads: the directory must be
writable only by the processor, as the data dir is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import marshal
import os
import pickle
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from book_processor import publishing
from book_processor.publishing import BookPublisher
from mbo_core import quality, records
from mbo_core.book import engine, events, kernel
from mbo_core.wire import records as records_wire

log = logging.getLogger("book_processor.checkpoint")

FORMAT = 1
KEEP = 3
SUFFIX = ".ckpt"
TEMPORARY_SUFFIX = ".tmp"
#: The modules whose classes make up a publisher's pickled state, and those that turn a records
#: message into what it applies (a change in any of them may change what a rebuild reaches).
_STATE_MODULES = (publishing, engine, events, kernel, quality, records, records_wire)
#: A temporary file older than this is left over from a write that died.
_STALE_TEMPORARY_S = 600.0


@cache
def code_version() -> str:
    """A hash of the code that defines the pickled state and how records feed it: the modules'
    source (their compiled code where no source is installed), numpy's and Python's versions."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{sys.version_info[:3]} numpy {np.__version__}".encode())
    for module in _STATE_MODULES:
        try:
            digest.update(Path(module.__file__ or "").read_bytes())
        except OSError:
            loader = module.__spec__.loader if module.__spec__ else None
            code = loader.get_code(module.__name__) if loader else None  # type: ignore[attr-defined]
            digest.update(marshal.dumps(code))
    return digest.hexdigest()


def fingerprint(
    key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]] | None
) -> str:
    """What identifies a records message: its key, value and headers (in any order)."""
    digest = hashlib.blake2b(digest_size=16)
    parts = [key or b"", value or b""]
    for name, header in sorted((name, bytes(v or b"")) for name, v in headers or ()):
        parts += [name.encode(), header]
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint read from disk: the publisher, and the fingerprint of the last message it
    processed (at offset `publisher.next_offset - 1`)."""

    publisher: BookPublisher
    fingerprint: str
    path: Path


class CheckpointStore:
    """The checkpoints of one records topic's partitions under `root`."""

    def __init__(self, root: Path, topic: str, *, keep: int = KEEP) -> None:
        self.root = root
        self.topic = topic
        self.keep = keep
        self._warned: set[str] = set()

    def _dir(self, partition: int) -> Path:
        return self.root / self.topic / str(partition)

    def _path(self, partition: int, next_offset: int) -> Path:
        # Zero-padded: the names sort as the offsets do.
        return self._dir(partition) / f"{next_offset:020d}{SUFFIX}"

    def encode(self, publisher: BookPublisher, last_message_fingerprint: str) -> bytes:
        """The file content of a checkpoint of `publisher` (cheap: call it where the publisher
        is not changing, then `write` the bytes anywhere)."""
        body = pickle.dumps(publisher, protocol=5)
        header = {
            **self._identity(
                publisher.partition,
                publisher.next_offset,
                snapshot_interval_ns=publisher.snapshot_interval_ns,
                snapshot_depth=publisher.snapshot_depth,
            ),
            "fingerprint": last_message_fingerprint,
            "body": _digest(body),
        }
        return json.dumps(header).encode() + b"\n" + body

    def _identity(
        self, partition: int, next_offset: int, *, snapshot_interval_ns: int, snapshot_depth: int
    ) -> dict[str, object]:
        """The header fields a checkpoint is written with and must match to be loaded."""
        return {
            "format": FORMAT,
            "code": code_version(),
            "topic": self.topic,
            "partition": partition,
            "next_offset": next_offset,
            "snapshot_interval_ns": snapshot_interval_ns,
            "snapshot_depth": snapshot_depth,
        }

    def write(self, partition: int, next_offset: int, content: bytes) -> Path | None:
        """Store a checkpoint and drop the older ones beyond `keep`; None (logged) if the
        directory cannot be written: checkpoints are a shortcut, the worker goes on."""
        directory = self._dir(partition)
        path = self._path(partition, next_offset)
        # Unique even for two workers that are both pid 1 in containers sharing the directory.
        temporary = directory / f".{path.name}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}"
        try:
            # Only the processor may write here: loading a checkpoint runs its pickle.
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with temporary.open("xb") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())  # a power cut leaves the old file or the whole new one
            temporary.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            self._warn_once(f"cannot write checkpoints in {directory}: {exc}")
            return None
        self._remove_stale_temporaries(directory)
        # Checkpoints past this one are of an earlier incarnation of the topic (the broker was
        # reset) or of a worker that held the partition before: neither is needed any more, and
        # keeping the highest offsets would otherwise keep stale files and drop new ones.
        offsets = self.offsets(partition)
        stale = [o for o in offsets if o > next_offset]
        older = [o for o in offsets if o <= next_offset][self.keep :]
        for old in stale + older:
            self.remove(partition, old)
        return path

    def _warn_once(self, message: str) -> None:
        # Every partition retries at every interval: say each distinct failure once.
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s (checkpoints are a shortcut: the worker goes on)", message)

    @staticmethod
    def _remove_stale_temporaries(directory: Path) -> None:
        """Temporary files of writes that died (kill -9, a full disk) are never renamed."""
        old = time.time() - _STALE_TEMPORARY_S
        with contextlib.suppress(OSError):
            for leftover in directory.glob(f".*{TEMPORARY_SUFFIX}"):
                with contextlib.suppress(OSError):
                    if leftover.stat().st_mtime < old:
                        leftover.unlink()

    def remove(self, partition: int, next_offset: int) -> None:
        # Another worker of the same data dir may have removed it already.
        with contextlib.suppress(OSError):
            self._path(partition, next_offset).unlink(missing_ok=True)

    def offsets(self, partition: int) -> list[int]:
        """The next offsets of the partition's checkpoints, newest first."""
        try:
            names = [p.name for p in self._dir(partition).iterdir()]
        except OSError:
            return []
        found = [n.removesuffix(SUFFIX) for n in names if n.endswith(SUFFIX)]
        return sorted((int(n) for n in found if n.isdigit()), reverse=True)

    def load(
        self, partition: int, next_offset: int, *, snapshot_interval_ns: int, snapshot_depth: int
    ) -> Checkpoint | None:
        """The checkpoint of the partition at `next_offset` if it is usable here, else None
        (logged with the reason; the file stays for the others to judge)."""
        path = self._path(partition, next_offset)
        try:
            content = path.read_bytes()
            line, _, body = content.partition(b"\n")
            header = json.loads(line)
        except (OSError, ValueError) as exc:
            log.warning("skipping checkpoint %s: %s", path, exc)
            return None
        if not isinstance(header, dict):
            log.warning("skipping checkpoint %s: its header is not a JSON object", path)
            return None
        expected = self._identity(
            partition,
            next_offset,
            snapshot_interval_ns=snapshot_interval_ns,
            snapshot_depth=snapshot_depth,
        )
        differing = sorted(k for k, v in expected.items() if header.get(k) != v)
        if differing:
            log.info("skipping checkpoint %s: written with other %s", path, ", ".join(differing))
            return None
        if header.get("body") != _digest(body):
            log.warning("skipping checkpoint %s: damaged (its content does not match)", path)
            return None
        try:
            publisher = pickle.loads(body)  # our own file (see the module doc)
        except Exception as exc:  # a damaged pickle can raise anything
            log.warning("skipping checkpoint %s: does not load (%r)", path, exc)
            return None
        if not isinstance(publisher, BookPublisher) or publisher.next_offset != next_offset:
            log.warning("skipping checkpoint %s: not a publisher at that offset", path)
            return None
        return Checkpoint(publisher, str(header.get("fingerprint")), path)


def _digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()
