"""The dead-letter topic's I/O side (mbo_core/wire/dead_letter.py has its format): noting a
refusal the one way every consumer does, and reading the topic back."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mbo_core.kafka.clients import make_consumer, topic_partitions
from mbo_core.metrics import MESSAGES_REJECTED
from mbo_core.settings import Settings
from mbo_core.wire import MalformedMessage
from mbo_core.wire.dead_letter import DeadLetter, dead_letter_headers, decode_dead_letter, refusal

log = logging.getLogger("mbo.dead_letters")

#: Longest wait for the dead-letter topic's messages up to its end offsets.
READ_TIMEOUT_S = 30.0


def note_refusal(
    stage: str, topic: str, partition: int, offset: int, key: bytes | None,
    headers: list[tuple[str, bytes]] | None, error: MalformedMessage,
) -> list[tuple[str, bytes]]:  # fmt: skip
    """Log (once) and count a message `stage` refused; the headers of its dead-letter copy."""
    letter = refusal(stage, topic, partition, offset, key, error)
    log.warning(letter.line())
    MESSAGES_REJECTED.labels(stage, topic, error.reason).inc()
    return dead_letter_headers(headers, letter)


@dataclass
class DeadLetters:
    """What the dead-letter topic holds: every refusal once (at-least-once copies collapsed)."""

    letters: list[DeadLetter] = field(default_factory=list)
    copies: int = 0  # messages in the topic, copies included

    def summary(self) -> dict[str, Any]:
        """The figures `mbo run`'s report gives."""
        return {
            "messages": len(self.letters),
            "copies": self.copies,
            "by_consumer": dict(Counter(letter.consumer for letter in self.letters)),
            "by_reason": dict(Counter(letter.reason for letter in self.letters)),
            "by_topic": dict(Counter(letter.topic for letter in self.letters)),
        }


async def read_dead_letters(settings: Settings) -> DeadLetters:
    """Every refusal in the dead-letter topic, in topic order, up to its end offsets now."""
    topic = settings.topics.dead_letter.name
    tps = await topic_partitions(settings, topic)
    consumer = make_consumer(settings, "dead-letters", group_id=None)
    await consumer.start()
    found = DeadLetters()
    seen: set[tuple[str, int, int, str]] = set()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if not any(ends.values()):
            return found
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                break
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    found.copies += 1
                    try:
                        letter = decode_dead_letter(message.headers)
                    except MalformedMessage:
                        continue  # not written by a consumer of ours
                    if letter.source not in seen:
                        seen.add(letter.source)
                        found.letters.append(letter)
    finally:
        await consumer.stop()
    return found
