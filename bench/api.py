"""API benchmark: live WebSocket fan-out and REST latest-book latency on a real pipeline.

    poetry run python -m bench.api [--clients 1000] [--seconds 30] [--max-hz 10]
                                   [--rest-connections 100] [--rest-rate 2000]
                                   [--rest-seconds 10] [--replay-rate 5000]
                                   [--replay-in producer|api] [--without-sink] [--file F]

Starts everything itself on loopback only, in a temporary data dir: the local broker, a
`mbo process` worker and `mbo api --with-sink` (its own process, chDB inside, as `mbo run` has
it; `--without-sink`: `mbo api` alone, as deployed next to a ClickHouse server, since nothing
here reads ClickHouse), and keeps FILE's book (default: the CLX5 sample) changing with a paced
looping replay at --replay-rate records/s: by `mbo produce` in its own process, as deployed
(--replay-in producer, the default), or through the API's replay control, which runs it inside
the API process as the UI's buttons do (--replay-in api; its CPU then competes with the
requests). --replay-rate 0: one flat-out replay first, then the book stays still. Then:

1. websocket: --clients concurrent clients on /v1/instruments/<id>/live?max_hz=--max-hz for
   --seconds: connected, messages received per second (all clients), failures (connections
   refused or dropped; target 0);
2. rest_latest_book: GET /v1/instruments/<id>/book from a Node.js load generator (its own
   process, not Python: it costs the shared CPU a fraction of what it measures), twice:
   * open_loop_fixed_rate: --rest-connections keep-alive connections sending at a fixed total
     --rest-rate requests/s (bench/openloop.mjs): the latency a client sees at that load,
     p50/p90/p99/max from when each request was due (coordinated omission counted), errors,
     achieved rate. This is the figure the target (p99 < 5 ms) is about.
   * closed_loop_saturation: --rest-connections connections each sending its next request
     as soon as the previous answer arrives (autocannon): the most requests/s the API serves,
     and the latency of a saturated server (queueing, not a service level).
   Each with the CPU the API process and the load generator used meanwhile (percent of one
   core), since on a 2-core machine they share the CPU with the broker, the processor and the
   replay, and the live messages (BBO and snapshots) the API consumed per second meanwhile:
   the book kept changing.
3. rest_latest_book.open_loop_fixed_rate_api_first (when a replay runs): the open loop again
   after the broker, the processor and `mbo produce` if it runs the replay (every thread of
   each) were moved to Linux's SCHED_IDLE policy, so they run on what CPU the API and the
   load generator leave: the latency the API gives when it has the CPU it needs, as CPU
   requests of its own give it in a deployment (infra/k8s), while the pipeline keeps feeding
   it (api_live_messages_per_s shows it does). Measured last, because an unprivileged process
   cannot move a thread back out of SCHED_IDLE.

The load generators are npm packages pinned in bench/package-lock.json, installed into
bench/node_modules by `npm ci --prefix bench` on first use (needs Node.js >= 18 and npm).

Prints JSON and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import websockets

from bench.procstat import cpu_seconds
from mbo_core.kafka.broker import LocalBroker
from mbo_core.kafka.probes import free_port
from mbo_core.settings import Settings

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
DEFAULT_FILE = BENCH.parents[1] / "shared" / "data" / "CLX5_mbo.dbn"
MBO = str(Path(sys.executable).parent / "mbo")
AUTOCANNON = BENCH / "node_modules" / ".bin" / "autocannon"
OPEN_LOOP = BENCH / "openloop.mjs"
T = TypeVar("T")


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


def node_tools() -> None:
    """Install the pinned load generators into bench/node_modules unless they are there."""
    installed = BENCH / "node_modules" / ".package-lock.json"
    lock = BENCH / "package-lock.json"
    if (
        AUTOCANNON.exists()
        and installed.exists()
        and installed.stat().st_mtime >= lock.stat().st_mtime
    ):
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SystemExit("bench.api: the REST load generators need Node.js >= 18 and npm")
    print("bench.api: npm ci --prefix bench", file=sys.stderr)
    subprocess.run([npm, "ci", "--prefix", str(BENCH), "--no-audit", "--no-fund"], check=True,
                   stdout=sys.stderr)  # fmt: skip


def live_messages(http: httpx.Client) -> float:
    """Messages the API's live consumer has read (mbo_messages_in_total{stage="api"})."""
    total = 0.0
    for line in http.get("/metrics").text.splitlines():
        if line.startswith('mbo_messages_in_total{stage="api"'):
            total += float(line.rsplit(" ", 1)[1])
    return total


def idle_priority(pid: int) -> None:
    """Every thread of `pid` to SCHED_IDLE (Linux's policy applies per thread; threads started
    later inherit it from the thread that starts them)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setscheduler(int(task.name), os.SCHED_IDLE, os.sched_param(0))


def _measured(api_pid: int, http: httpx.Client, run: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """run(), with the CPU the API process and the load generator (a child that has exited
    by the time run() returns) used meanwhile, in percent of one core, and the live messages
    the API read per second meanwhile."""
    api_before, children_before = cpu_seconds(api_pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    messages_before = live_messages(http)
    started = time.monotonic()
    result = run()
    elapsed = time.monotonic() - started
    messages = live_messages(http) - messages_before
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_s = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    api_s = cpu_seconds(api_pid) - api_before
    return result, {
        "api_process_cpu_percent": round(100 * api_s / elapsed, 1),
        "load_generator_cpu_percent": round(100 * client_s / elapsed, 1),
        "api_live_messages_per_s": round(messages / elapsed, 1),
    }


def _node_json(command: list[str]) -> dict[str, Any]:
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"bench.api: no JSON from {command[0]}: {out.stderr[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def rest_open_loop(url: str, connections: int, rate: float, seconds: float) -> dict[str, Any]:
    result = _node_json([
        "node", str(OPEN_LOOP), "--url", url, "--connections", str(connections),
        "--rate", str(rate), "--duration", str(seconds),
    ])  # fmt: skip
    return {
        "what": f"{connections} connections sending {rate:g} requests/s in total at fixed "
        "times; latency from when each request was due (coordinated omission counted)",
        **result,
    }


def rest_closed_loop(url: str, connections: int, seconds: float) -> dict[str, Any]:
    result = _node_json([str(AUTOCANNON), "-c", str(connections), "-d", str(seconds), "-j", url])
    latency, requests = result["latency"], result["requests"]
    return {
        "what": f"{connections} connections each sending its next request as soon as the "
        "previous answer arrives (autocannon): the most the API serves; the latency is queueing "
        "at saturation, not a service level",
        "connections": connections,
        "duration_s": result["duration"],
        "requests_ok": result["2xx"],
        "errors": result["errors"] + result["timeouts"],
        "non_2xx": result["non2xx"],
        "requests_per_s": requests["average"],
        "latency_ms": {k: latency[k] for k in ("p50", "p90", "p99", "p99_9", "max")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-hz", type=float, default=10.0)
    parser.add_argument("--rest-connections", type=int, default=100)
    parser.add_argument(
        "--rest-rate",
        type=float,
        default=2000.0,
        help="Open-loop offered rate, requests/s over all connections.",
    )
    parser.add_argument("--rest-seconds", type=float, default=10.0)
    parser.add_argument(
        "--replay-rate",
        type=float,
        default=5000.0,
        help="Records/s of the looping replay during the measurements (0: none).",
    )
    parser.add_argument(
        "--replay-in",
        choices=("producer", "api"),
        default="producer",
        help="Who runs that replay: `mbo produce` in its own process (as deployed) or the "
        "API's replay control, inside the API process (as the UI's replay buttons do).",
    )
    parser.add_argument(
        "--without-sink",
        action="store_true",
        help="Run `mbo api` without the in-process ClickHouse sink.",
    )
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()  # fmt: skip
    source = args.file.resolve()
    node_tools()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp, contextlib.ExitStack() as stack:
        data = Path(tmp) / "data"
        data.mkdir()
        broker = stack.enter_context(LocalBroker(_settings(data)))
        pipeline = {"broker": broker.state.pid}  # the processes feeding the API
        port = free_port()
        env = {
            **os.environ, "MBO_DATA_DIR": str(data),
            "MBO_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "MBO_API__HOST": HOST, "MBO_API__PORT": str(port),
            "MBO_API__REPLAY_DIR": str(source.parent), "MBO_LOG__LEVEL": "WARNING",
        }  # fmt: skip
        logs = (Path(tmp) / "stages.log").open("wb")
        children = []
        api_args = ["api"] if args.without_sink else ["api", "--with-sink"]
        for args_ in (api_args, ["process", "--metrics-port", "0"]):
            child = subprocess.Popen([MBO, *args_], env=env, stdout=logs, stderr=subprocess.STDOUT)
            children.append(child)
            if args_[0] == "process":
                pipeline["processor"] = child.pid

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
        if args.replay_rate > 0 and args.replay_in == "producer":
            # The book changes during the measurements through a paced, looping `mbo produce`
            # of its own, as deployed (the producer is a stage, not part of the gateway).
            producer = subprocess.Popen(
                [MBO, "produce", str(source), "--rate", f"{args.replay_rate:g}", "--loop", "100"],
                env=env, stdout=logs, stderr=subprocess.STDOUT,
            )  # fmt: skip
            children.append(producer)
            pipeline["producer"] = producer.pid
        else:
            http.post("/v1/replay", json={"file": str(source)}).raise_for_status()
            _wait(lambda: http.get("/v1/replay").json()["state"] == "finished", 300, "no replay")
        rows = _wait(lambda: http.get("/v1/instruments").json(), 300, "no instrument appeared")
        instrument = rows[0]["instrument_id"]
        _wait(lambda: http.get(f"/v1/instruments/{instrument}/book").status_code == 200, 300,
              "no book appeared")  # fmt: skip
        setup_s = time.monotonic() - started
        if args.replay_rate > 0 and args.replay_in == "api":
            # Keep the book changing during the measurements: a paced, looping replay.
            paced = {"file": str(source), "rate": args.replay_rate, "loop": 100}
            http.post("/v1/replay", json=paced).raise_for_status()
        ws = asyncio.run(websocket_phase(base, instrument, args.clients, args.seconds, args.max_hz))
        print(f"bench.api: websocket {ws}", file=sys.stderr)
        url = f"http://{base}/v1/instruments/{instrument}/book"
        api_pid = children[0].pid

        def open_loop() -> dict[str, Any]:
            result, usage = _measured(api_pid, http, lambda: rest_open_loop(
                url, args.rest_connections, args.rest_rate, args.rest_seconds))  # fmt: skip
            print(f"bench.api: rest open loop {result} {usage}", file=sys.stderr)
            return {**result, **usage}

        rest = {"open_loop_fixed_rate": open_loop()}
        closed_loop, closed_cpu = _measured(api_pid, http, lambda: rest_closed_loop(
            url, args.rest_connections, args.rest_seconds))  # fmt: skip
        rest["closed_loop_saturation"] = {**closed_loop, **closed_cpu}
        if args.replay_rate > 0:
            for pid in pipeline.values():
                idle_priority(pid)
            rest["open_loop_fixed_rate_api_first"] = {
                "at_sched_idle": sorted(pipeline),
                **open_loop(),
            }
        replay = http.get("/v1/replay").json()
        http.post("/v1/replay/stop")
        http.close()
        print(json.dumps({
            "file": str(source), "instrument_id": instrument, "setup_s": round(setup_s, 1),
            "conditions": {
                "api": " ".join(["mbo", *api_args]),
                "replay_during_measurements": (
                    "none: book still" if args.replay_rate <= 0
                    else f"{args.replay_rate:g} records/s, looping, by `mbo produce` (own process)"
                    if args.replay_in == "producer"
                    else f"{args.replay_rate:g} records/s, looping, through the API's replay "
                    f"control, inside the API process (state {replay['state']})"
                ),
                "cpus": os.cpu_count(),
            },
            "websocket": ws,
            "rest_latest_book": rest,
            "targets": {"websocket_failures": 0, "rest_open_loop_p99_ms": 5},
        }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
