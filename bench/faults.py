"""Fault harness: a replay through `mbo run` while its processes are killed, then an exact check.

    poetry run python -m bench.faults [--records 1000000] [--instruments 8] [--workers 2]
                                      [--rate 8000] [--kills 20] [--stop-s 10] [--seed 7]
                                      [--brokers 3] [--victims broker]

Generates a multi-instrument file (`mbo generate`), runs `mbo run --until-drained` on it on the
local broker and chDB, and meanwhile, at moments drawn from the seed, kill -9s a stage drawn
from the seed: the producer (while it replays), each processor worker, the sink (with chDB it
runs inside the API process: killing it kills the API too) and the broker, `--kills` times,
each after the previous victim recovered; plus one SIGSTOP of a stage for `--stop-s` seconds,
then SIGCONT. Then it checks ClickHouse against the offline truth (tests/offline.py): every
record of the file once, in order, per instrument (0 lost, 0 duplicate); the BBO table row for
row; the final books.

Prints one JSON object: kills by stage, recovery time (kill -> the replacement process serving
its port) p50 and max, the stop, the rows checked and what differed, the run's report.

--brokers 3 runs the same on three local Kafka brokers (mbo_core.kafka.cluster: KRaft, distinct
ports and data dirs, replication factor 3, min.insync.replicas 2, acks=all), whose nodes are
among the victims ("broker-<id>"; the cluster's process restarts them). `--brokers 3 --kills 1
--victims broker --stop-s 0` kills one broker once: `send_to_event_max_ms` is then the stall the
leader election cost.
A stage is killed at most KILLS_PER_WINDOW times within mbo_cli.supervisor.CRASH_WINDOW_S,
below the deaths the supervisor allows there: the harness tests recovery, not that limit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbo_cli.supervisor import CRASH_WINDOW_S

MBO = [sys.executable, "-m", "mbo_cli.main"]
#: Kills of one stage within mbo_cli.supervisor.CRASH_WINDOW_S: well below the deaths after
#: which the supervisor gives up on it (the harness tests recovery, not that limit).
KILLS_PER_WINDOW = 3
#: Longest wait for a killed stage to be back before the harness gives up on the run.
RECOVERY_TIMEOUT_S = 120.0


@dataclass
class Faults:
    """What the harness did to the run."""

    kills: list[dict[str, Any]] = field(default_factory=list)
    stop: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        seen = [k["recovery_s"] for k in self.kills if k["recovery_s"] is not None]
        recoveries = np.array(seen) if seen else None
        by_stage: dict[str, int] = {}
        for kill in self.kills:
            by_stage[kill["stage"]] = by_stage.get(kill["stage"], 0) + 1
        return {
            "kills": len(self.kills),
            "kills_by_stage": dict(sorted(by_stage.items())),
            "recovery_s": None
            if recoveries is None
            else {
                "p50": round(float(np.percentile(recoveries, 50)), 2),
                "max": round(float(recoveries.max()), 2),
            },
            "recoveries_unseen": len(self.kills) - len(seen),  # the run ended first
            "stop": self.stop,
            "timeline": self.kills,
        }


def _cluster_nodes(cluster_data: Path | None) -> list[dict[str, Any]]:
    """The running nodes of the harness's three-broker cluster, from its state.json."""
    if cluster_data is None:
        return []
    try:
        nodes: list[dict[str, Any]] = json.loads(
            (cluster_data / "kafka-cluster" / "state.json").read_text()
        )["nodes"]
    except (OSError, ValueError, KeyError):
        return []
    return nodes


def _processes(run_dir: Path, cluster_data: Path | None = None) -> dict[str, int]:
    """Running pids by stage name (the local broker's as "broker", a cluster's nodes as
    "broker-<id>"), from mbo run's processes.json and the cluster's state.json."""
    path = run_dir / "processes.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    pids = dict(record.get("children", {}))
    if record.get("broker"):
        pids["broker"] = record["broker"]
    for node in _cluster_nodes(cluster_data):
        pids[f"broker-{node['node_id']}"] = int(node["pid"])
    return pids


def _ports(run_dir: Path, data_dir: Path, cluster_data: Path | None = None) -> dict[str, int]:
    try:
        ports: dict[str, int] = json.loads((run_dir / "ports.json").read_text())
    except (OSError, ValueError):
        ports = {}
    try:
        cluster = json.loads((data_dir / "kafka" / "cluster.json").read_text())
        ports["broker"] = int(cluster["port"])
    except (OSError, ValueError, KeyError):
        pass
    for node in _cluster_nodes(cluster_data):
        ports[f"broker-{node['node_id']}"] = int(node["port"])
    return ports


def _serving(port: int | None) -> bool:
    if port is None:
        return True
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by mbo run) is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_recovered(run: subprocess.Popen[bytes], run_dir: Path, data_dir: Path, stage: str,
                    old_pid: int, killed_at: float,
                    cluster_data: Path | None) -> float | None:  # fmt: skip
    """Seconds from the kill until the stage runs again under a new pid and serves its port;
    None if the run drained and ended first (the others had taken over its work)."""
    deadline = killed_at + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        if run.poll() is not None:
            return None
        pid = _processes(run_dir, cluster_data).get(stage)
        back = pid is not None and pid != old_pid and _alive(pid)
        if back and _serving(_ports(run_dir, data_dir, cluster_data).get(stage)):
            return time.monotonic() - killed_at
        time.sleep(0.05)
    raise SystemExit(f"{stage} did not recover within {RECOVERY_TIMEOUT_S:.0f} s")


def _producer_done(run_dir: Path) -> bool:
    return (run_dir / "producer.json").exists()


def inflict(
    run: subprocess.Popen[bytes],
    data_dir: Path,
    *,
    kills: int,
    stop_s: float,
    seed: int,
    replay_s: float,
    cluster_data: Path | None = None,
    victims: tuple[str, ...] = (),
) -> Faults:
    """The kills and the stop (none when stop_s is 0), at seeded moments spread over the
    replay's expected length, of stages whose names start with one of `victims` (all: ())."""
    run_dir = data_dir / "run"
    rng = random.Random(seed)
    faults = Faults()
    killed: dict[str, list[float]] = {}  # monotonic kill times by stage
    deadline = time.monotonic() + 600
    while "producer" not in _processes(run_dir):
        if run.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("mbo run ended before its producer started")
        time.sleep(0.1)
    started = time.monotonic()
    # The moments: uniform over the replay (after its first second), one of them the stop.
    moments = sorted(
        rng.uniform(1.0, max(replay_s * 0.8, 2.0)) for _ in range(kills + (1 if stop_s else 0))
    )
    stop_at = rng.randrange(len(moments)) if stop_s else -1
    for index, moment in enumerate(moments):
        time.sleep(max(started + moment - time.monotonic(), 0.0))
        pids = _processes(run_dir, cluster_data)
        now = time.monotonic()
        stages = sorted(
            s
            for s in pids
            if (s != "producer" or not _producer_done(run_dir))
            and (not victims or s.startswith(victims))
            and sum(now - t < CRASH_WINDOW_S for t in killed.get(s, [])) < KILLS_PER_WINDOW
        )
        if run.poll() is not None or not stages:
            break
        stage = rng.choice(stages)
        pid = pids[stage]
        if index == stop_at:
            at = time.monotonic() - started
            os.kill(pid, signal.SIGSTOP)
            time.sleep(stop_s)
            os.kill(pid, signal.SIGCONT)
            faults.stop = {"stage": stage, "at_s": round(at, 2), "seconds": stop_s}
            continue
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        killed.setdefault(stage, []).append(killed_at)
        recovered = _wait_recovered(run, run_dir, data_dir, stage, pid, killed_at, cluster_data)
        at = round(killed_at - started, 2)
        recovery = None if recovered is None else round(recovered, 2)
        faults.kills.append({"stage": stage, "at_s": at, "recovery_s": recovery})
    return faults


def _start_cluster(cluster_data: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Three local KRaft brokers (mbo_core.kafka.cluster, replication 3, min ISR 2), which
    restart a node that dies; returns the process and the variables pointing mbo run at it."""
    cluster = subprocess.Popen(
        [sys.executable, "-m", "mbo_core.kafka.cluster", "--data-dir", str(cluster_data)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert cluster.stdout is not None
    exports: dict[str, str] = {}
    while len(exports) < 2:
        line = cluster.stdout.readline().decode()
        if not line:
            raise SystemExit("the three-broker cluster did not start")
        if line.startswith("export "):
            name, value = line.removeprefix("export ").strip().split("=", 1)
            exports[name] = value
    return cluster, exports


def generate(path: Path, records: int, instruments: int, seed: int) -> None:
    subprocess.run(
        [*MBO, "generate", "--instruments", str(instruments), "--records", str(records),
         "--seed", str(seed), "-o", str(path)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def harness(
    work: Path,
    *,
    records: int,
    instruments: int,
    workers: int,
    rate: float,
    kills: int,
    stop_s: float,
    seed: int,
    brokers: int = 1,
    victims: tuple[str, ...] = (),
) -> dict[str, Any]:
    from tests.offline import (  # noqa: PLC0415 (the offline truth the tests use)
        BBO_SQL,
        offline,
        record_differences,
        sql,
    )

    source = work / "faults.dbn"
    generate(source, records, instruments, seed)
    data_dir = work / "data"
    report = work / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBO_")}
    # Checkpoints often: a killed worker resumes from one instead of rebuilding from offset 0.
    env["MBO_PIPELINE__CHECKPOINT_INTERVAL_S"] = "2"
    cluster = None
    cluster_data = None
    if brokers == 3:
        cluster_data = work / "cluster"
        cluster, exports = _start_cluster(cluster_data)
        env.update(exports)
    started = time.monotonic()
    run = subprocess.Popen(
        [*MBO, "run", "--replay", str(source), "--rate", str(rate), "--workers", str(workers),
         "--until-drained", "--data-dir", str(data_dir), "--report", str(report),
         "--timeout", "900"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        faults = inflict(
            run, data_dir, kills=kills, stop_s=stop_s, seed=seed, replay_s=records / rate,
            cluster_data=cluster_data, victims=victims,
        )  # fmt: skip
        _, stderr = run.communicate(timeout=1200)
    finally:
        if run.poll() is None:
            run.kill()
        if cluster is not None:
            cluster.send_signal(signal.SIGTERM)
            cluster.wait(60)
    if run.returncode != 0:
        raise SystemExit(f"mbo run failed ({run.returncode}): {stderr.decode()[-2000:]}")
    seconds = time.monotonic() - started
    figures = json.loads(report.read_text())
    expected_bbo, _finals = offline(source)
    stored_bbo = [tuple(r.values()) for r in sql(data_dir, BBO_SQL)]
    bbo_mismatch = sum(a != b for a, b in zip(stored_bbo, expected_bbo, strict=False))
    records_check = record_differences(data_dir, source)
    return {
        "records": records,
        "instruments": instruments,
        "workers": workers,
        "rate": rate,
        "seed": seed,
        "seconds": round(seconds, 1),
        "kills_asked": kills,
        "faults": faults.summary(),
        "checked": {
            "records": records_check,
            "bbo": {
                "expected": len(expected_bbo),
                "stored": len(stored_bbo),
                "rows_differing": bbo_mismatch + abs(len(stored_bbo) - len(expected_bbo)),
            },
        },
        "exact": records_check["lost"] == records_check["extra"] == 0
        and not records_check["instruments_not_exact"]
        and stored_bbo == expected_bbo,
        "brokers": brokers,
        # The longest send -> publication of any BBO/snapshot message: what a stall cost.
        "send_to_event_max_ms": figures["latency_ms"]["send_to_event"].get("max"),
        "send_to_event_p99_ms": figures["latency_ms"]["send_to_event"].get("p99"),
        "restarts": figures["restarts"],
        "dead_letters": figures["dead_letters"]["messages"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--instruments", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    # 1M records at 8,000/s: a 125 s replay, room for 20 kills and their recoveries (~5 s each).
    parser.add_argument("--rate", type=float, default=8_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--stop-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--brokers", type=int, choices=(1, 3), default=1,
        help="1: mbo run's local broker; 3: a local three-broker cluster (replication 3)",
    )  # fmt: skip
    parser.add_argument(
        "--victims", default="",
        help="comma-separated stage name prefixes to kill (e.g. broker); default: every stage",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mbo-faults-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = harness(
            work,
            records=args.records,
            instruments=args.instruments,
            workers=args.workers,
            rate=args.rate,
            kills=args.kills,
            stop_s=args.stop_s,
            seed=args.seed,
            brokers=args.brokers,
            victims=tuple(v for v in args.victims.split(",") if v),
        )
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["exact"] else 1)


if __name__ == "__main__":
    main()
