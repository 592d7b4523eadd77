"""`mbo infra up | init | status | down`: the local Kafka broker, the topics and the ClickHouse
schema.

`up` starts the local Apache Kafka broker (KRaft, storage in `<data dir>/kafka`) detached unless
MBO_KAFKA__BOOTSTRAP_SERVERS points at an existing Kafka, then creates the topics and applies
the ClickHouse schema on MBO_CLICKHOUSE__URL (dev default: chDB in the data dir). Against
external servers it only provisions them, so it is also the deployment step for staging and prod.

`init` is that deployment step alone, for a one-shot container or a Kubernetes init container: it
never starts a broker (MBO_KAFKA__BOOTSTRAP_SERVERS is required), waits for the servers to
answer, creates the topics, applies the schema and exits 0.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Annotated

import typer

from mbo_core.errors import InputError, MboError
from mbo_core.kafka import broker, probes
from mbo_core.settings import Settings, load_settings

app = typer.Typer(
    help="Local Kafka broker, topics and ClickHouse schema.",
    no_args_is_help=True,
)


def _say(line: str = "") -> None:
    print(line, flush=True)


def _start_or_reuse(settings: Settings) -> tuple[broker.BrokerState, bool]:
    """The data dir's running broker, or a newly started detached one; True if started now."""
    try:
        return broker.start_broker(settings, detach=True), True
    except broker.BrokerAlreadyRunningError as running:
        return running.state, False


def _provision(settings: Settings) -> None:
    # Imported here: `mbo` loads this module for every command, and these pull in aiokafka,
    # clickhouse-connect and chDB.
    from mbo_core.kafka.topics import ensure_topics, topic_specs  # noqa: PLC0415
    from mbo_core.storage import clickhouse  # noqa: PLC0415

    created = set(asyncio.run(ensure_topics(settings, wait_s=0)))  # init retries itself
    for spec in topic_specs(settings):
        verb = "created" if spec.name in created else "exists"
        plural = "s" if spec.partitions != 1 else ""
        _say(f"  topic {spec.name}: {spec.partitions} partition{plural}, {verb}")

    client = clickhouse.connect(settings)
    try:
        applied = clickhouse.apply_schema(client)
        versions = clickhouse.applied_migrations(client)
    finally:
        client.close()
    latest = max(versions, default=0)
    done = ", ".join(migration.name for migration in applied) or "none needed"
    _say(
        f"ClickHouse: {settings.clickhouse_url} database {settings.clickhouse.database} "
        f"(schema version {latest}; applied now: {done})"
    )


@app.command("up")
def up() -> None:
    """Start the local broker (unless Kafka is configured), create the topics, apply the schema."""
    settings = load_settings()
    external = settings.kafka.bootstrap_servers
    started: broker.BrokerState | None = None
    if external is not None:
        _say(f"Kafka: {external} (external, from MBO_KAFKA__BOOTSTRAP_SERVERS)")
        servers = external
    else:
        state, is_new = _start_or_reuse(settings)
        started = state if is_new else None
        servers = state.bootstrap_servers
        how = "started" if is_new else "already running"
        _say(
            f"Kafka: {servers} (local Apache Kafka {broker.kafka_version(settings)}, pid "
            f"{state.pid}, {how}; data in {broker.storage_dir(settings)}, log {state.log_file})"
        )
    try:
        _provision(settings)
    except BaseException:
        # Do not leave a half-provisioned broker behind that a rerun would silently reuse.
        if started is not None:
            broker.stop_broker(settings)
        raise
    _say()
    _say("Point the stages at it (or put these lines in .env):")
    _say(f"  export MBO_KAFKA__BOOTSTRAP_SERVERS={servers}")
    _say(f"  export MBO_CLICKHOUSE__URL={settings.clickhouse_url}")
    if external is None:
        _say("Stop the broker with: mbo infra down")


@app.command("init")
def init(
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            help="Keep retrying for this many seconds while Kafka or ClickHouse do not answer "
            "yet (0: one attempt).",
        ),
    ] = 120.0,
) -> None:
    """Create the topics and apply the schema on the configured servers, then exit (no broker)."""
    if wait < 0:
        raise InputError(f"--wait must be 0 or a number of seconds, not {wait}")
    settings = load_settings()
    servers = settings.kafka.bootstrap_servers
    if servers is None:
        raise MboError(
            "mbo infra init provisions configured servers: set MBO_KAFKA__BOOTSTRAP_SERVERS "
            "(`mbo infra up` starts a local broker instead)"
        )
    _say(f"Kafka: {servers}")
    deadline = time.monotonic() + wait
    attempt = 1
    while True:
        try:
            _provision(settings)
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise MboError(f"infra init gave up after {attempt} attempt(s): {exc}") from None
            print(f"mbo: infra init: attempt {attempt} failed ({exc}); retrying", file=sys.stderr)
            attempt += 1
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        else:
            return


@app.command("class-archive")
def class_archive() -> None:
    """Record the local broker's JVM class archive, which makes it start faster and cheaper,
    and the storage template that formats new data dirs without the storage tool (`make setup`
    does this once after installing Kafka; rerun after changing the JDK)."""
    settings = load_settings()
    started = time.monotonic()
    path = broker.build_class_archive(settings)
    size_mib = path.stat().st_size >> 20
    _say(f"class archive: {path} ({size_mib} MiB, {time.monotonic() - started:.1f} s)")


@app.command("status")
def status() -> None:
    """Report the broker address and whether it answers; exit code 1 if it does not."""
    settings = load_settings()
    external = settings.kafka.bootstrap_servers
    if external is not None:
        host, _, port = external.split(",")[0].rpartition(":")
        answering = probes.kafka_answers(host, int(port), timeout_s=3.0)
        _say(f"Kafka: {external} (external): {'answering' if answering else 'NOT answering'}")
    else:
        current = broker.broker_status(settings)
        answering = current.running
        if current.state is None:
            _say(f"Kafka: no local broker recorded in {broker.state_file(settings)}")
        elif current.running:
            _say(
                f"Kafka: {current.state.bootstrap_servers} (local Apache Kafka, pid "
                f"{current.state.pid}, data in {broker.storage_dir(settings)}): running"
            )
        else:
            problem = "not answering" if current.process_alive else "not running (stale record)"
            _say(f"Kafka: {current.state.bootstrap_servers} (pid {current.state.pid}): {problem}")
    _say(f"ClickHouse: {settings.clickhouse_url} database {settings.clickhouse.database}")
    if not answering:
        raise typer.Exit(code=1)


@app.command("down")
def down() -> None:
    """Stop the local broker; its data stays in <data dir>/kafka. Does nothing if none runs."""
    settings = load_settings()
    stopped = broker.stop_broker(settings)
    if stopped is None:
        _say("Kafka: no local broker was running")
    else:
        _say(f"Kafka: stopped the local broker at {stopped.bootstrap_servers} (pid {stopped.pid})")
    if settings.kafka.bootstrap_servers is not None:
        print(
            "mbo: note: MBO_KAFKA__BOOTSTRAP_SERVERS is set; external brokers are left alone",
            file=sys.stderr,
        )
