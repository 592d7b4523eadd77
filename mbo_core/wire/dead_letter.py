"""The dead-letter topic (`mbo.dead-letter`): messages a consumer refused as malformed.

A consumer that meets a message it cannot decode (mbo_core.wire raises MalformedMessage) never
acts on part of it: it copies the message whole, key, value and headers, to the dead-letter
topic, adds headers saying where it came from and why, and goes on. Its offset is committed only
once the copy is acked, so a message is either processed, dead-lettered, or read again.

Headers added (ASCII, after the original message's own):

| header                   | value                                                      |
|--------------------------|------------------------------------------------------------|
| dead-letter-topic        | the topic the message was read from                        |
| dead-letter-partition    | its partition                                              |
| dead-letter-offset       | its offset                                                 |
| dead-letter-key          | its key, hex (the Kafka key is also kept as is)            |
| dead-letter-reason       | a fixed label: MalformedMessage.REASONS                    |
| dead-letter-detail       | what exactly is wrong, one line, at most 300 characters    |
| dead-letter-consumer     | who refused it: processor, sink                            |

Delivery is at least once: a consumer that restarts before committing copies the message again.
(topic, partition, offset, consumer) identifies a refusal: readers that count refusals
(`mbo run`'s report) count distinct ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mbo_core.wire.headers import MalformedMessage, header_map

H_DL_TOPIC = "dead-letter-topic"
H_DL_PARTITION = "dead-letter-partition"
H_DL_OFFSET = "dead-letter-offset"
H_DL_KEY = "dead-letter-key"
H_DL_REASON = "dead-letter-reason"
H_DL_DETAIL = "dead-letter-detail"
H_DL_CONSUMER = "dead-letter-consumer"
DETAIL_CHARS = 300


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Where a refused message came from and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    reason: str
    detail: str
    consumer: str

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (H_DL_TOPIC, self.topic.encode()),
            (H_DL_PARTITION, str(self.partition).encode()),
            (H_DL_OFFSET, str(self.offset).encode()),
            (H_DL_KEY, b"" if self.key is None else self.key.hex().encode()),
            (H_DL_REASON, self.reason.encode()),
            (H_DL_DETAIL, self.detail[:DETAIL_CHARS].encode(errors="replace")),
            (H_DL_CONSUMER, self.consumer.encode()),
        ]

    def line(self) -> str:
        """The log line of the refusal."""
        return (
            f"dead-lettered {self.topic}[{self.partition}]@{self.offset} (key {self.key!r}): "
            f"{self.reason}: {self.detail[:DETAIL_CHARS]}"
        )

    @property
    def source(self) -> tuple[str, int, int, str]:
        """What identifies the refusal across at-least-once copies."""
        return self.topic, self.partition, self.offset, self.consumer


def refusal(
    consumer: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    error: MalformedMessage,
) -> DeadLetter:
    detail = " ".join(str(error).split())  # one line whatever the decoder said
    return DeadLetter(topic, partition, offset, key, error.reason, detail, consumer)


def dead_letter_headers(
    original: Iterable[tuple[str, bytes]] | None, letter: DeadLetter
) -> list[tuple[str, bytes]]:
    """The dead-letter copy's headers: the original message's, then where it came from and
    why."""
    return [*(original or ()), *letter.headers()]


def decode_dead_letter(headers: Iterable[tuple[str, bytes]] | None) -> DeadLetter:
    """Where a dead-letter topic message came from; MalformedMessage if it does not say."""
    h = header_map(headers)
    try:
        key = h[H_DL_KEY]
        return DeadLetter(
            topic=h[H_DL_TOPIC].decode(),
            partition=int(h[H_DL_PARTITION]),
            offset=int(h[H_DL_OFFSET]),
            key=bytes.fromhex(key.decode()) if key else None,
            reason=h[H_DL_REASON].decode(),
            detail=h[H_DL_DETAIL].decode(errors="replace"),
            consumer=h[H_DL_CONSUMER].decode(),
        )
    except (KeyError, ValueError) as exc:
        raise MalformedMessage("header", f"not a dead-letter message: {exc}") from None
