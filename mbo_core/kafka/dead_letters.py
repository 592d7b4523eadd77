"""Reading the dead-letter topic back (mbo_core/wire/dead_letter.py has its format)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mbo_core.kafka.clients import make_consumer, topic_partitions
from mbo_core.settings import Settings
from mbo_core.wire import MalformedMessage
from mbo_core.wire.dead_letter import DeadLetter, decode_dead_letter

#: Longest wait for the dead-letter topic's messages up to its end offsets.
READ_TIMEOUT_S = 30.0


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
