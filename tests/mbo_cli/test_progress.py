"""`mbo run`'s progress line: what it reads from the stages' /metrics, and how often."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from mbo_cli.progress import RunProgress

METRICS = {
    "producer": b"# TYPE mbo_records_out_total counter\n"
    b'mbo_records_out_total{stage="producer",topic="mbo.records"} 1200.0\n',
    "processor-0": b"# TYPE mbo_records_in_total counter\n"
    b'mbo_records_in_total{stage="processor"} 700.0\n',
    "processor-1": b"# TYPE mbo_records_in_total counter\n"
    b'mbo_records_in_total{stage="processor"} 300.0\n',
    "sink": b"# TYPE mbo_clickhouse_rows_total counter\n"
    b'mbo_clickhouse_rows_total{stage="sink",table="mbo_records"} 900.0\n'
    b'mbo_clickhouse_rows_total{stage="sink",table="bbo"} 55.0\n',
}


@pytest.fixture
def stages() -> Iterator[tuple[dict[str, int], list[str]]]:
    """A /metrics server per stage; (stage -> port, the stages scraped, in order)."""
    scraped: list[str] = []
    servers = []
    ports = {}
    for stage, body in METRICS.items():

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self, body: bytes = body, stage: str = stage) -> None:
                scraped.append(stage)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        ports[stage] = server.server_address[1]
    yield ports, scraped
    for server in servers:
        server.shutdown()


def test_the_line_sums_each_stage_counter(stages: tuple[dict[str, int], list[str]]) -> None:
    ports, _ = stages
    run = RunProgress("127.0.0.1", ports, "127.0.0.1", total=5000, tty=False)
    line = run.line(now=1.0)
    assert line.startswith("mbo run: 1,200 / 5,000 records sent")
    assert "1,000 processed, 900 in ClickHouse" in line


def test_off_a_terminal_the_stages_are_read_only_for_a_logged_line(
    stages: tuple[dict[str, int], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ports, scraped = stages
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    run = RunProgress("127.0.0.1", ports, "127.0.0.1", total=None, tty=False)
    for _ in range(30):  # 15 s of mbo run's 0.5 s loop
        run.update()
        clock[0] += 0.5
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # at 0 s and at 10 s
    assert len(scraped) == 2 * len(METRICS)
