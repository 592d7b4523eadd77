"""`mbo run`'s progress line: records sent of the replay's total, processed, in ClickHouse.

Read from the stages' own /metrics for each line shown (the producer's mbo_records_out_total, the
processors' mbo_records_in_total, the sink's mbo_clickhouse_rows_total{table="mbo_records"}):
no Kafka or ClickHouse request of its own. On a terminal it is one line redrawn in place; else a
line every LOG_EVERY_S. The counters restart with a restarted stage and count re-inserted rows
again, so the figures are what the stages did, not an exact account: the drain check and the
report are that.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

EVERY_S = 1.0
LOG_EVERY_S = 10.0


@dataclass
class RunProgress:
    host: str
    ports: dict[str, int]  # stage -> /metrics port, as in <run dir>/ports.json
    sink_host: str
    total: int | None  # records the replay sends (file records x copies), if known
    tty: bool = field(default_factory=lambda: sys.stderr.isatty())  # noqa: PLW0108 (now)
    _shown_at: float = 0.0
    _logged_at: float = 0.0
    _width: int = 0
    _rate: tuple[float, int] | None = None  # (when, sent) for the send rate
    _sent: int = 0  # the most the producer reported: it exits when done, its /metrics with it

    def update(self) -> None:
        """Redraw the line (a terminal, every EVERY_S) or log it (every LOG_EVERY_S). The
        figures are read only for a line shown: each read scrapes three stages' /metrics, and
        the API + sink's exposition alone cost it ~25 ms of CPU."""
        now = time.monotonic()
        if self.tty:
            if now - self._shown_at < EVERY_S:
                return
            self._shown_at = now
            line = self.line(now)
            sys.stderr.write("\r" + line.ljust(self._width))
            sys.stderr.flush()
            self._width = len(line)
        elif now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            print(self.line(now), file=sys.stderr)

    def line(self, now: float) -> str:
        sent = self._sent = max(
            self._sent, self._sum("producer", "mbo_records_out_total", "stage", "producer")
        )
        processed = sum(
            self._sum(name, "mbo_records_in_total", "stage", "processor")
            for name in self.ports
            if name.startswith("processor-")
        )
        stored = self._sum("sink", "mbo_clickhouse_rows_total", "table", "mbo_records")
        rate = 0.0
        if self._rate is not None and now > self._rate[0]:
            rate = max(sent - self._rate[1], 0) / (now - self._rate[0])
        self._rate = (now, sent)
        of = f" / {self.total:,}" if self.total else ""
        return (
            f"mbo run: {sent:,}{of} records sent ({rate:,.0f}/s), {processed:,} processed, "
            f"{stored:,} in ClickHouse"
        )

    def clear(self) -> None:
        if self.tty and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0

    def _sum(self, stage: str, metric: str, label: str, value: str) -> int:
        port = self.ports.get(stage)
        if not port:
            return 0
        host = self.sink_host if stage == "sink" else self.host
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=0.5) as response:
                text = response.read().decode()
        except OSError:
            return 0  # restarting: its figure comes back with it
        total = 0.0
        for family in text_string_to_metric_families(text):
            if family.name == metric.removesuffix("_total"):
                for sample in family.samples:
                    if sample.name == metric and sample.labels.get(label) == value:
                        total += sample.value
        return int(total)
