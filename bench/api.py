"""API benchmark: live WebSocket fan-out and REST latest-book latency on a real pipeline.

    poetry run python -m bench.api [--clients 1000] [--seconds 30] [--max-hz 10]
                                   [--rest-clients 100] [--rest-requests 20000] [--file F]

Starts everything itself on loopback only, in a temporary data dir: the local broker, a
`mbo process` worker and `mbo api --with-sink` (its own process, chDB inside), replays FILE
(default: the CLX5 sample) flat out through the API's replay control and waits for its book.
Then, while a paced looping replay of the same file keeps the book changing:

1. websocket: --clients concurrent clients on /v1/instruments/<id>/live?max_hz=--max-hz for
   --seconds: connected, messages received per second (all clients), failures (connections
   refused or dropped; target 0);
2. rest: --rest-clients concurrent clients GET /v1/instruments/<id>/book until --rest-requests
   answers: p50/p99/max latency in ms (measured in this client process, so it includes the
   client's own event-loop overhead) and requests/s.

Prints JSON and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from mbo_core.broker import LocalBroker, free_port
from mbo_core.settings import Settings

HOST = "127.0.0.1"
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "CLX5_mbo.dbn"
MBO = str(Path(sys.executable).parent / "mbo")


def _settings(data: Path) -> Settings:
    return Settings(_env_file=None, _secrets_dir=None, data_dir=data)  # type: ignore[call-arg]


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            value = check()
            if value:
                return value
        time.sleep(0.2)
    raise SystemExit(f"bench.api: {what}")


async def _ws_client(url: str, stop_at: float, stats: dict[str, int]) -> None:
    try:
        async with websockets.connect(url, open_timeout=60, max_queue=4) as ws:
            stats["connected"] += 1
            while True:
                left = stop_at - time.monotonic()
                if left <= 0:
                    return
                try:
                    await asyncio.wait_for(ws.recv(), left)
                except TimeoutError:
                    return
                stats["messages"] += 1
    except Exception:
        stats["failures"] += 1


async def websocket_phase(
    base: str, instrument: int, clients: int, seconds: float, hz: float
) -> dict[str, Any]:
    url = f"ws://{base}/v1/instruments/{instrument}/live?max_hz={hz}"
    stats = {"connected": 0, "messages": 0, "failures": 0}
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(*(_ws_client(url, stop_at, stats) for _ in range(clients)))
    elapsed = time.monotonic() - started
    return {
        "clients": clients, "seconds": round(elapsed, 1), "max_hz": hz,
        "connected": stats["connected"], "failures": stats["failures"],
        "messages": stats["messages"], "messages_per_s": round(stats["messages"] / elapsed, 1),
        "messages_per_client_per_s": round(stats["messages"] / elapsed / max(1, clients), 2),
    }  # fmt: skip


async def rest_phase(base: str, instrument: int, clients: int, requests: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    remaining = requests
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://{base}", limits=limits, timeout=30) as http:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    response = await http.get(f"/v1/instruments/{instrument}/book")
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                errors += response.status_code != 200

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "clients": clients, "requests": len(latencies), "errors": errors,
        "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": round(latencies[-1] * 1000, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-hz", type=float, default=10.0)
    parser.add_argument("--rest-clients", type=int, default=100)
    parser.add_argument("--rest-requests", type=int, default=20_000)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()
    source = args.file.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp, contextlib.ExitStack() as stack:
        data = Path(tmp) / "data"
        data.mkdir()
        broker = stack.enter_context(LocalBroker(_settings(data)))
        port = free_port()
        env = {
            **os.environ, "MBO_DATA_DIR": str(data),
            "MBO_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "MBO_API__HOST": HOST, "MBO_API__PORT": str(port),
            "MBO_API__REPLAY_DIR": str(source.parent), "MBO_LOG__LEVEL": "WARNING",
        }  # fmt: skip
        logs = (Path(tmp) / "stages.log").open("wb")
        children = []
        for args_ in (["api", "--with-sink"], ["process", "--metrics-port", "0"]):
            child = subprocess.Popen([MBO, *args_], env=env, stdout=logs, stderr=subprocess.STDOUT)
            children.append(child)

        def stop_children() -> None:
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()

        stack.callback(stop_children)
        base = f"{HOST}:{port}"
        http = httpx.Client(base_url=f"http://{base}", timeout=30)
        _wait(lambda: http.get("/healthz").status_code == 200, 120, "the API did not start")
        started = time.monotonic()
        http.post("/v1/replay", json={"file": str(source)}).raise_for_status()
        _wait(lambda: http.get("/v1/replay").json()["state"] == "finished", 300, "no replay")
        rows = _wait(lambda: http.get("/v1/instruments").json(), 300, "no instrument appeared")
        instrument = rows[0]["instrument_id"]
        _wait(lambda: http.get(f"/v1/instruments/{instrument}/book").status_code == 200, 300,
              "no book appeared")  # fmt: skip
        setup_s = time.monotonic() - started
        # Keep the book changing during the measurements: a paced, looping replay.
        http.post("/v1/replay", json={"file": str(source), "rate": 5000, "loop": 100})
        ws = asyncio.run(websocket_phase(base, instrument, args.clients, args.seconds, args.max_hz))
        print(f"bench.api: websocket {ws}", file=sys.stderr)
        rest = asyncio.run(rest_phase(base, instrument, args.rest_clients, args.rest_requests))
        http.post("/v1/replay/stop")
        http.close()
        print(json.dumps({
            "file": str(source), "instrument_id": instrument, "setup_s": round(setup_s, 1),
            "websocket": ws, "rest_latest_book": rest,
            "targets": {"websocket_failures": 0, "rest_p99_ms": 5},
        }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
