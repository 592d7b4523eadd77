"""Checkpoints of a partition's books, so that a restarted worker does not re-read it all.

Without a checkpoint a worker that takes a partition re-reads it from offset 0 (book_processor.app),
about 340k records/s on this project's machine: minutes for a day of a busy instrument. A
checkpoint is the pickled `BookPublisher` of one records partition after the message at
`next_offset - 1`, with a fingerprint of that message. The publisher is the partition's whole
state and its output depends only on its input, so a restored publisher is in exactly the state a
rebuild from offset 0 reaches and what it publishes next is byte-identical.

A checkpoint is only a shortcut and is never trusted blindly: it is skipped, and the partition
rebuilt from an older one or from offset 0, when it was written by other code (a hash of the
modules that define the state), for another records topic, partition, snapshot interval or depth,
when it does not load, or when the records topic's message at its offset is not the one it
fingerprinted (the broker was reset or the topic recreated: the local broker keeps nothing across
a restart).

Files: `<data dir>/processor/<group id>/checkpoints/<records topic>/<partition>/<next offset>.ckpt`,
a JSON header line then the pickle, written under a temporary name and renamed; the newest
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
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from book_processor import publishing
from book_processor.publishing import BookPublisher
from mbo_core.book import engine, kernel

log = logging.getLogger("book_processor.checkpoint")

FORMAT = 1
KEEP = 3
SUFFIX = ".ckpt"
#: The modules whose classes make up a publisher's pickled state.
_STATE_MODULES = (publishing, engine, kernel)


@cache
def code_version() -> str:
    """A hash of the source of the modules that define the pickled state."""
    digest = hashlib.blake2b(digest_size=8)
    for module in _STATE_MODULES:
        digest.update(Path(module.__file__ or "").read_bytes())
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

    def _dir(self, partition: int) -> Path:
        return self.root / self.topic / str(partition)

    def encode(self, publisher: BookPublisher, last_message_fingerprint: str) -> bytes:
        """The file content of a checkpoint of `publisher` (cheap: call it where the publisher
        is not changing, then `write` the bytes anywhere)."""
        header = {
            "format": FORMAT,
            "code": code_version(),
            "topic": self.topic,
            "partition": publisher.partition,
            "next_offset": publisher.next_offset,
            "snapshot_interval_ns": publisher.snapshot_interval_ns,
            "snapshot_depth": publisher.snapshot_depth,
            "fingerprint": last_message_fingerprint,
        }
        return json.dumps(header).encode() + b"\n" + pickle.dumps(publisher, protocol=5)

    def write(self, partition: int, next_offset: int, content: bytes) -> Path | None:
        """Store a checkpoint and drop the older ones beyond `keep`; None (logged) if the
        directory cannot be written: checkpoints are a shortcut, the worker goes on."""
        directory = self._dir(partition)
        path = directory / f"{next_offset:020d}{SUFFIX}"
        temporary = directory / f".{path.name}.{os.getpid()}.tmp"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(content)
            temporary.replace(path)
        except OSError as exc:
            log.warning("cannot write checkpoint %s: %s", path, exc)
            return None
        # Checkpoints past this one are of an earlier incarnation of the topic (the broker was
        # reset) or of a worker that held the partition before: neither is needed any more, and
        # keeping the highest offsets would otherwise keep stale files and drop new ones.
        offsets = self.offsets(partition)
        stale = [o for o in offsets if o > next_offset]
        older = [o for o in offsets if o <= next_offset][self.keep :]
        for old in stale + older:
            self.remove(partition, old)
        return path

    def remove(self, partition: int, next_offset: int) -> None:
        # Another worker of the same data dir may have removed it already.
        with contextlib.suppress(OSError):
            (self._dir(partition) / f"{next_offset:020d}{SUFFIX}").unlink(missing_ok=True)

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
        path = self._dir(partition) / f"{next_offset:020d}{SUFFIX}"
        try:
            content = path.read_bytes()
            line, _, body = content.partition(b"\n")
            header = json.loads(line)
        except (OSError, ValueError) as exc:
            log.warning("skipping checkpoint %s: %s", path, exc)
            return None
        expected = {
            "format": FORMAT,
            "code": code_version(),
            "topic": self.topic,
            "partition": partition,
            "next_offset": next_offset,
            "snapshot_interval_ns": snapshot_interval_ns,
            "snapshot_depth": snapshot_depth,
        }
        differing = sorted(k for k, v in expected.items() if header.get(k) != v)
        if differing:
            log.info("skipping checkpoint %s: written with other %s", path, ", ".join(differing))
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
