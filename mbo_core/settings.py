"""Typed settings of every stage: one model, read from the environment, `.env` and secret files.

Every variable is `MBO_<GROUP>__<FIELD>` (or `MBO_<FIELD>` at the top level), e.g.
`MBO_KAFKA__BOOTSTRAP_SERVERS`, `MBO_TOPICS__RECORDS__PARTITIONS`. Precedence, highest first:
keyword arguments, process environment, the profile's env file (`.env.<profile>`), `.env`, secret
files (a file named like the variable in `MBO_SECRETS_DIR`, default `/run/secrets` when it
exists), the profile's defaults, the defaults written below (which are the `dev` profile's).
One variable has no MBO_ name: Databento's own `DATABENTO_API_KEY` (environment only), the
fallback of `MBO_DATABENTO__API_KEY`.

`MBO_PROFILE` picks the defaults: `dev` (the default: a local broker started by `mbo infra up`,
chDB under the data dir, short Kafka timeouts so group joins take ~1 s), `staging` and `prod`
(longer timeouts, JSON logs, replicated topics, and no local fallback: the Kafka and ClickHouse
addresses must be given). `.env.example` lists every variable.

Call `load_settings()` at start: it returns validated settings or raises MboError with one line
naming the variable and the problem.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, Self, get_args
from urllib.parse import urlsplit

import dotenv
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mbo_core.errors import MboError

Profile = Literal["dev", "staging", "prod"]
PROFILES: Final[tuple[Profile, ...]] = get_args(Profile)

ENV_PREFIX: Final = "MBO_"
NESTED_DELIMITER: Final = "__"
#: Read by load_settings() itself (they say where settings come from), so they are not fields.
ENV_FILE_VAR: Final = "MBO_ENV_FILE"
SECRETS_DIR_VAR: Final = "MBO_SECRETS_DIR"
DEFAULT_SECRETS_DIR: Final = Path("/run/secrets")

#: Databento's own variable for the API key, read when MBO_DATABENTO__API_KEY is not set.
DATABENTO_KEY_VAR: Final = "DATABENTO_API_KEY"
DEFAULT_HISTORICAL_GATEWAY: Final = "https://hist.databento.com"

_DAY_MS: Final = 24 * 3600 * 1000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL_USERINFO = re.compile(r"(://)[^/@]*@")
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Group):
    """Kafka client settings shared by every stage (aiokafka and Faust alike)."""

    bootstrap_servers: str | None = Field(
        default=None,
        description="Comma-separated host:port list of Kafka brokers. Unset in dev: the local "
        "broker started by `mbo infra up` (its address is read from the data dir). Required in "
        "staging and prod.",
    )
    client_id: str = Field(
        default="mbo", description="Prefix of the Kafka client id; each stage appends its role."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How clients talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", description="SASL mechanism when security_protocol is SASL_*."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (secret: env or secret file only)."
    )
    ssl_cafile: Path | None = Field(
        default=None,
        description="CA bundle (PEM) to verify the brokers with SSL/SASL_SSL; unset: system CAs.",
    )
    acks: Literal["all", "1"] = Field(
        default="all",
        description="Producer acks: all (every in-sync replica) or 1 (leader only). acks=0 is "
        "not offered: delivery is at-least-once.",
    )
    linger_ms: int = Field(
        default=2, ge=0, le=1000, description="Producer wait (ms) to fill a batch before sending."
    )
    max_batch_size: int = Field(
        default=512 * 1024, ge=1024, description="Producer batch size per partition (bytes)."
    )
    max_request_size: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest produce request (bytes); a message larger than this is refused. "
        "Keep it at or below the brokers' message.max.bytes.",
    )
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="none",
        description="Producer compression; snappy/lz4/zstd need their Python codec installed.",
    )
    startup_wait_s: float = Field(
        default=60.0,
        ge=0,
        description="How long a stage starting while the brokers do not answer (restarting, "
        "not up yet) retries, with backoff, before it fails (s); 0: fail at once.",
    )
    request_timeout_ms: int = Field(
        default=40_000,
        ge=1000,
        description="Client request timeout (ms); must exceed session_timeout_ms (a group join "
        "can take that long). Default 40000 (dev, staging), 60000 (prod).",
    )
    session_timeout_ms: int = Field(
        default=2000,
        ge=500,
        description="Consumer group session timeout (ms). Group joins take about half of it. "
        "Default 2000 (dev), 10000 (staging), 45000 (prod). Apache Kafka refuses values below "
        "its group.min.session.timeout.ms (6000 unless lowered).",
    )
    heartbeat_interval_ms: int = Field(
        default=500,
        ge=100,
        description="Consumer heartbeat interval (ms), below a third of the session timeout. "
        "Default 500 (dev), 3000 (staging, prod).",
    )
    max_poll_interval_ms: int = Field(
        default=300_000,
        ge=1000,
        description="Longest pause (ms) between polls before a consumer leaves its group.",
    )
    fetch_max_wait_ms: int = Field(
        default=500,
        ge=0,
        description="Longest time (ms) the broker holds a fetch waiting for data, for every "
        "consumer but the book processor's (sink, API live feed, reports). Kafka answers a held "
        "fetch as soon as data arrives, so this bounds idle polling, not latency.",
    )
    check_crcs: bool = Field(
        default=False,
        description="Consumers verify the CRC32C of every record batch they fetch. Off by default, "
        "as in librdkafka: the broker verified each batch's CRC when it was produced, TCP checks "
        "what crosses the wire, and checking again cost the consumers ~1 CPU-s per GB fetched "
        "(a quarter of their fetching cost). Turn on to catch corruption on the brokers' disks.",
    )
    processor_fetch_max_wait_ms: int = Field(
        default=500,
        ge=0,
        description="The same for the book processor's records consumer (Faust writes 1500 ms "
        "into its code; this replaces it, so that a stopping worker is not held by a fetch).",
    )
    sink_fetch_min_bytes: int = Field(
        default=1 << 20,
        ge=1,
        description="The sink's fetches wait for this many bytes (or sink_fetch_max_wait_ms): it "
        "inserts about once a second anyway, and a fetch per message cost the broker and the "
        "sink a round trip each.",
    )
    sink_fetch_max_wait_ms: int = Field(
        default=250,
        ge=0,
        description="Longest time (ms) the broker holds a sink fetch waiting for "
        "sink_fetch_min_bytes.",
    )
    live_fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        description="The API's live consumer, once caught up, reads at most once per this "
        "interval (ms), so under load a fetch carries this long's data, not one message, and "
        "an idle one waits at the broker (fetch_max_wait_ms) instead of returning empty every "
        "interval; the live feeds send at most MBO_API__WS_MAX_HZ (50) updates a second anyway.",
    )
    processor_group_id: str = Field(
        default="mbo-book-processor", description="Consumer group of the book processor."
    )
    sink_group_id: str = Field(
        default="mbo-clickhouse-sink", description="Consumer group of the ClickHouse sink."
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap_servers(cls, value: str | None) -> str | None:
        if value is None:
            return None
        servers = [server.strip() for server in value.split(",") if server.strip()]
        if not servers:
            raise ValueError("expected host:port[,host:port...], got an empty list")
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {server!r}")
        return ",".join(servers)

    @field_validator("compression_type")
    @classmethod
    def _check_codec_installed(cls, value: str) -> str:
        if value == "none":
            return value
        import aiokafka.codec  # noqa: PLC0415 (slow import)

        available = {
            "gzip": aiokafka.codec.has_gzip(),
            "snappy": aiokafka.codec.has_snappy(),
            "lz4": aiokafka.codec.has_lz4(),
            "zstd": aiokafka.codec.has_zstd(),
        }
        if not available[value]:
            raise ValueError(f"{value} compression needs its Python codec, which is not installed")
        return value

    @model_validator(mode="after")
    def _check_timeouts(self) -> Self:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                f"MBO_KAFKA__HEARTBEAT_INTERVAL_MS={self.heartbeat_interval_ms} must be at most a "
                f"third of MBO_KAFKA__SESSION_TIMEOUT_MS={self.session_timeout_ms}"
            )
        if self.request_timeout_ms <= self.session_timeout_ms:
            raise ValueError(
                f"MBO_KAFKA__REQUEST_TIMEOUT_MS={self.request_timeout_ms} must exceed "
                f"MBO_KAFKA__SESSION_TIMEOUT_MS={self.session_timeout_ms}"
            )
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"MBO_KAFKA__SECURITY_PROTOCOL={self.security_protocol} needs "
                "MBO_KAFKA__SASL_USERNAME and MBO_KAFKA__SASL_PASSWORD"
            )
        return self


class TopicSettings(_Group):
    """One Kafka topic. Deletion by age (cleanup.policy=delete) for all of them: every consumer
    needs every message, so none is compacted."""

    name: str = Field(description="Topic name.")
    partitions: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Partition count, fixed at creation: messages are keyed by instrument, so "
        "changing it would reorder an instrument's messages.",
    )
    retention_ms: int = Field(
        default=7 * _DAY_MS,
        ge=-1,
        description="How long the broker keeps messages (ms); -1 keeps them forever.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _TOPIC_NAME.match(value) or value in (".", ".."):
            raise ValueError(f"{value!r} is not a valid Kafka topic name ([A-Za-z0-9._-], ≤249)")
        return value


class RecordsTopicSettings(TopicSettings):
    name: str = Field(
        default="mbo.records",
        description="Raw MBO records: chunks of whole events of one instrument, keyed by it.",
    )
    retention_ms: int = Field(
        default=-1,
        ge=-1,
        description="Kept forever by default: a worker that takes a partition without a usable "
        "checkpoint rebuilds its books from offset 0, and orders added before a deleted head "
        "would be missing from them.",
    )


class BboTopicSettings(TopicSettings):
    name: str = Field(default="mbo.bbo", description="Top-of-book events from the processor.")


class SnapshotsTopicSettings(TopicSettings):
    name: str = Field(default="mbo.snapshots", description="Depth-N book snapshots.")
    retention_ms: int = Field(
        default=30 * _DAY_MS,
        ge=-1,
        description="Snapshots are kept longer (30 days) so a late sink still finds them all.",
    )


class DeadLetterTopicSettings(TopicSettings):
    name: str = Field(
        default="mbo.dead-letter",
        description="Messages a consumer refused as malformed, whole, with headers saying where "
        "they came from and why (docs/faults.md).",
    )
    partitions: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="Partition count; one is plenty: dead letters are rare and read by people.",
    )
    retention_ms: int = Field(
        default=30 * _DAY_MS,
        ge=-1,
        description="Kept 30 days, long enough to find out what sent them.",
    )


class TopicsSettings(_Group):
    """Every topic of the pipeline; mbo_core.kafka.topics creates them from here."""

    records: RecordsTopicSettings = Field(
        default_factory=RecordsTopicSettings, description="The raw MBO records topic."
    )
    bbo: BboTopicSettings = Field(
        default_factory=BboTopicSettings, description="The top-of-book topic."
    )
    snapshots: SnapshotsTopicSettings = Field(
        default_factory=SnapshotsTopicSettings, description="The depth snapshots topic."
    )
    dead_letter: DeadLetterTopicSettings = Field(
        default_factory=DeadLetterTopicSettings,
        description="Where consumers put the messages they refuse as malformed.",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replicas of each topic created by the pipeline. Default 1 (dev), 3 "
        "(staging, prod).",
    )


class ClickHouseSettings(_Group):
    """Where the sink writes and the API reads."""

    url: str | None = Field(
        default=None,
        description="chdb:///absolute/dir for the embedded engine, http(s)://host:port for a "
        "server (no credentials in the URL). Unset in dev: chdb://<data dir>/clickhouse. "
        "Required in staging and prod.",
    )
    database: str = Field(default="mbo", description="Database of the pipeline's tables.")
    username: str = Field(default="default", description="ClickHouse user (servers only).")
    password: SecretStr = Field(
        default=SecretStr(""),
        description="ClickHouse password (servers only; secret: env or secret file only).",
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="Connection timeout to a server (s)."
    )
    query_timeout_s: float = Field(
        default=300.0, gt=0, description="Send/receive timeout of a query to a server (s)."
    )
    verify_tls: bool = Field(default=True, description="Verify the server certificate (https).")
    ca_cert: Path | None = Field(
        default=None, description="CA bundle (PEM) for https; unset: system CAs."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme == "chdb":
            if parts.netloc or not parts.path.startswith("/"):
                raise ValueError("a chdb URL needs an absolute directory: chdb:///abs/dir")
            return value.rstrip("/") or value
        if parts.scheme not in ("http", "https"):
            raise ValueError("expected chdb:///abs/dir or http(s)://host:port")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "put credentials in MBO_CLICKHOUSE__USERNAME / MBO_CLICKHOUSE__PASSWORD, "
                "not in the URL"
            )
        if not parts.hostname:
            raise ValueError("expected http(s)://host:port, the host is missing")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                "expected http(s)://host:port only; set the database with MBO_CLICKHOUSE__DATABASE"
            )
        return value.rstrip("/")

    @field_validator("database")
    @classmethod
    def _check_database(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
        return value


class ApiSettings(_Group):
    """The HTTP API and UI server."""

    host: str = Field(default="127.0.0.1", description="Address the API binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the API listens on.")
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token clients must send; unset: no auth on loopback, and off loopback "
        "state-changing requests are refused (403); refused in prod unless the API binds to "
        "loopback. Secret: env or secret file only.",
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins browsers may call the API from (CORS), e.g. "
        "http://localhost:5173; `*` for any; empty: no CORS headers. Besides the API's own, the "
        "only origins whose pages may POST to it or open its WebSockets (docs/api.md).",
    )
    allowed_hosts: str = Field(
        default="",
        description="Comma-separated host names the API answers to (the Host header) besides "
        "localhost, the bind address and IP addresses, e.g. api.example.com,*.internal.example; "
        "`*` for any. Any other Host gets 400 (DNS-rebinding defence, docs/api.md).",
    )
    replay_dir: Path | None = Field(
        default=None,
        description="Directory whose DBN files POST /v1/replay may replay (files outside it are "
        "refused); unset: replay control is off. `mbo run` sets it to the replayed file's folder.",
    )
    ws_max_hz: float = Field(
        default=50.0,
        gt=0,
        le=1000,
        description="Highest update rate (messages/s per client) a live-feed client may ask for.",
    )
    ui_dir: Path | None = Field(
        default=None,
        description="Static web UI served at /; unset: ui/dist (or ui/) of the source tree if "
        "it exists.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, value: str) -> str:
        # Each entry: a host name, `*.` and a domain (any of its subdomains), or `*`.
        for entry in value.split(","):
            pattern = entry.strip()
            if pattern and not re.fullmatch(r"\*|(\*\.)?[\w-]+(\.[\w-]+)*\.?", pattern, re.ASCII):
                raise ValueError(
                    f"{pattern!r} is not a host name, `*.` and a domain, or `*` (no scheme, port "
                    "or path)"
                )
        return value

    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    def allowed_host_list(self) -> list[str]:
        return [host.strip().lower() for host in self.allowed_hosts.split(",") if host.strip()]

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class LogSettings(_Group):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Lowest level logged."
    )
    format: Literal["text", "json"] = Field(
        default="text",
        description="text for people, json (one object a line) for collectors. "
        "Default text (dev), json (staging, prod).",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class BrokerSettings(_Group):
    """The local Apache Kafka broker (KRaft, one node) of `mbo infra up`, `mbo run` and the tests.

    Its jars come from Maven Central (`make setup`, infra/kafka/pom.xml); its storage, config
    and logs live under `<data dir>/kafka` and outlive it: stopped, killed or restarted, it comes
    back with every topic, message and committed offset.
    """

    port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Loopback port of the Kafka listener; 0: a free one, picked at the first "
        "start and kept for the data dir.",
    )
    controller_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Loopback port of the KRaft controller listener; 0: as for port.",
    )
    kafka_libs: Path | None = Field(
        default=None,
        description="Directory of Apache Kafka's jars; unset: .tools/kafka/libs of the source "
        "tree, which `make setup` fills.",
    )
    java: Path | None = Field(
        default=None,
        description="Java 17+ executable; unset: $JAVA_HOME/bin/java, else java on PATH.",
    )
    heap_mb: int = Field(
        default=1024,
        ge=256,
        le=65536,
        description="JVM heap of the broker (MiB): Kafka keeps messages in the page cache, not "
        "on the heap, so 1 GiB is ample on a 2-core/24 GiB machine.",
    )
    jvm_options: str = Field(
        default="",
        description="Extra JVM options of the broker, space-separated, after the project's own "
        "(a later -XX flag wins): e.g. '-XX:+AlwaysPreTouch' or a JMX port to look inside it.",
    )
    start_timeout_s: float = Field(
        default=90.0,
        gt=0,
        description="How long to wait for the broker to answer (s); a start after kill -9 "
        "first recovers its logs.",
    )
    stop_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long to wait after SIGTERM (a controlled shutdown) before SIGKILL (s).",
    )


class PipelineSettings(_Group):
    """How the stages cut, conflate and batch the stream (not where it goes)."""

    chunk_records: int = Field(
        default=8192,
        ge=1,
        le=1_000_000,
        description="Producer: most records in one Kafka message (an event is never split, so a "
        "larger event travels whole; capped to fit MBO_KAFKA__MAX_REQUEST_SIZE). Only flat-out "
        "replays fill chunks (paced ones send each instrument's chunk every linger); every "
        "message costs each stage and the broker a request's worth of CPU, so 8192 rather than "
        "2048 saved 1-1.5 CPU-µs per record of a flat 2M-record run. The processor cuts a "
        "chunk's outputs that exceed one produce request into several messages.",
    )
    chunk_linger_ms: float = Field(
        default=50.0,
        ge=0,
        description="Producer: longest a record waits for its chunk to fill before it is sent. "
        "Each records message costs every stage and the broker CPU whatever its size, so a "
        "paced replay of many instruments sends (instruments / linger) messages per second: "
        "at 2 ms the local pipeline fell behind already at 10k records/s (docs/producer.md).",
    )
    latency_log_dir: Path | None = Field(
        default=None,
        description="Processor: a directory to append each published message's (sent-ns, "
        "processed-ns) stamps to (mbo_core/latency_log.py; `mbo run` sets <data dir>/run/latency "
        "for its report). Unset: not written.",
    )
    snapshot_interval_ms: int = Field(
        default=1000,
        ge=1,
        description="Processor: event-time interval of depth snapshots per book (conflation).",
    )
    snapshot_depth: int = Field(
        default=10,
        ge=1,
        le=10,
        description="Processor: levels per side in a snapshot (at most 10: snapshots travel as "
        "DBN MBP-10 records).",
    )
    checkpoint_interval_s: float = Field(
        default=30.0,
        ge=0,
        description="Processor: seconds between checkpoints of a partition's books in the data "
        "dir, from which a restarted worker resumes instead of re-reading the partition from "
        "offset 0; 0 turns them off.",
    )
    sink_batch_records: int = Field(
        default=200_000,
        ge=1,
        description="Sink: most MBO records gathered into one ClickHouse insert.",
    )
    sink_flush_ms: int = Field(
        default=1000,
        ge=1,
        description="Sink: longest a consumed message waits before its batch is inserted. Each "
        "insert makes a part per table that ClickHouse merges later: at 200 ms the merges took a "
        "third of a core at 5,000 records/s (docs/api.md).",
    )


class MetricsSettings(_Group):
    """Prometheus endpoints (/metrics) of the stages; port 0 turns a stage's endpoint off."""

    host: str = Field(default="127.0.0.1", description="Address the metrics endpoints bind to.")
    producer_port: int = Field(default=9101, ge=0, le=65535, description="Producer /metrics.")
    processor_port: int = Field(
        default=9110,
        ge=0,
        le=65535,
        description="Processor /metrics; worker N of `--workers` listens on this port + N.",
    )
    sink_port: int = Field(default=9102, ge=0, le=65535, description="Sink /metrics.")


class DatabentoSettings(_Group):
    """Databento's gateways, the API key and what `mbo fetch` may spend (docs/databento.md)."""

    api_key: SecretStr | None = Field(
        default=None,
        description="Databento API key (secret: env or secret file only; never logged or "
        "printed). Unset: DATABENTO_API_KEY, the variable Databento's own tools read.",
    )
    historical_gateway: str = Field(
        default=DEFAULT_HISTORICAL_GATEWAY,
        description="Historical API gateway: https://host[:port] (the client always speaks "
        "HTTPS; a test points it at a local fake).",
    )
    live_gateway: str | None = Field(
        default=None,
        description="Live gateway host; unset: the dataset's own "
        "(<dataset>.lsg.databento.com, e.g. glbx-mdp3.lsg.databento.com).",
    )
    live_port: int = Field(default=13000, ge=1, le=65535, description="Port of the Live gateway.")
    cost_limit_usd: float = Field(
        default=5.0,
        ge=0,
        description="`mbo fetch` refuses a request that costs more than this (USD, as "
        "metadata.get_cost quotes it) unless given --yes; 0: every paid request needs --yes.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Where fetched files are kept, one per request, so the same request is "
        "not paid twice; unset: <data dir>/databento.",
    )

    @field_validator("historical_gateway")
    @classmethod
    def _check_gateway(cls, value: str) -> str:
        text = value.strip().rstrip("/")
        parts = urlsplit(text if "://" in text else f"https://{text}")
        if parts.scheme != "https":
            raise ValueError("expected https://host[:port]: the Databento client speaks only HTTPS")
        if not parts.hostname or "@" in parts.netloc or parts.query or parts.fragment:
            raise ValueError("expected https://host[:port] (no credentials, query or fragment)")
        try:
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"expected https://host[:port]: {exc}") from None
        return parts.geturl()

    @field_validator("live_gateway")
    @classmethod
    def _check_live_gateway(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host = value.strip()
        if not host or "://" in host or "/" in host or ":" in host.strip("[]"):
            raise ValueError("expected a host name (the port is MBO_DATABENTO__LIVE_PORT)")
        return host


#: What each profile changes from the defaults written in the fields (which are dev's).
_PROFILE_DEFAULTS: Final[dict[Profile, dict[str, dict[str, Any]]]] = {
    "dev": {},
    "staging": {
        "kafka": {
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 3000,
        },
        "topics": {"replication_factor": 3},
        "log": {"format": "json"},
    },
    "prod": {
        "kafka": {
            "session_timeout_ms": 45_000,
            "heartbeat_interval_ms": 3000,
            "request_timeout_ms": 60_000,
        },
        "topics": {"replication_factor": 3},
        "log": {"format": "json"},
    },
}


class Settings(BaseSettings):
    """Everything a stage needs to know about its environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        case_sensitive=False,
        # `MBO_X=` (e.g. a line uncommented from .env.example) means "not set".
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
        env_file=None,
        # .env is shared with other tools (docker compose reads CLICKHOUSE_PASSWORD from it):
        # only MBO_ lines are ours.
        dotenv_filtering="match_prefix",
    )

    profile: Profile = Field(
        default="dev", description="dev, staging or prod: picks the defaults (see .env.example)."
    )
    data_dir: Path = Field(
        default=Path("data"),
        description="Local state: the chDB directory (dev), the local broker's pid/port/log, the "
        "replay lock and the processor's Faust state.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Kafka clients.")
    topics: TopicsSettings = Field(default_factory=TopicsSettings, description="Kafka topics.")
    clickhouse: ClickHouseSettings = Field(
        default_factory=ClickHouseSettings, description="ClickHouse."
    )
    api: ApiSettings = Field(default_factory=ApiSettings, description="HTTP API.")
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="Local broker.")
    pipeline: PipelineSettings = Field(
        default_factory=PipelineSettings, description="Chunking, conflation and batching."
    )
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings, description="Prometheus endpoints."
    )
    databento: DatabentoSettings = Field(
        default_factory=DatabentoSettings,
        description="Databento: API key, gateways, cost limit, download cache.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The nested source maps a secret file MBO_CLICKHOUSE__PASSWORD to clickhouse.password,
        # which the flat default source cannot do.
        # DATABENTO_API_KEY comes last: every MBO_ source (a secret file too) wins over it.
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            NestedSecretsSettingsSource(file_secret_settings, secrets_dir_missing="ok"),
            _DatabentoKeySource(settings_cls),
        )

    @model_validator(mode="before")
    @classmethod
    def _apply_profile_defaults(cls, data: Any) -> Any:
        # Sources hand over only the values that were given, so a profile default fills in
        # exactly what nobody set.
        if not isinstance(data, dict):
            return data
        profile = data.get("profile", "dev")
        if isinstance(profile, str):
            profile = profile.strip().lower()
        if profile not in _PROFILE_DEFAULTS:
            return data  # field validation reports the bad profile
        merged = {**data, "profile": profile}
        for group, defaults in _PROFILE_DEFAULTS[profile].items():
            given = merged.get(group)
            if given is None:
                merged[group] = dict(defaults)
            elif isinstance(given, Mapping):
                merged[group] = {**defaults, **given}
        return merged

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved once so that the chDB URL and the broker state file do not depend on the
        # working directory of whoever reads them later.
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _check_profile_requirements(self) -> Self:
        if self.profile == "dev":
            return self
        missing = [
            name
            for name, value in (
                ("MBO_KAFKA__BOOTSTRAP_SERVERS", self.kafka.bootstrap_servers),
                ("MBO_CLICKHOUSE__URL", self.clickhouse.url),
            )
            if value is None
        ]
        if missing:
            raise ValueError(
                f"{' and '.join(missing)} must be set in the {self.profile} profile "
                "(only dev falls back to the local broker and chDB)"
            )
        if self.profile == "prod" and self.api.token is None and not self.api.is_loopback():
            raise ValueError(
                f"MBO_API__TOKEN must be set in the prod profile when the API binds to "
                f"{self.api.host} (not loopback)"
            )
        return self

    @property
    def clickhouse_url(self) -> str:
        """The ClickHouse URL to connect to: the configured one, or dev's chDB in the data dir."""
        if self.clickhouse.url is not None:
            return self.clickhouse.url
        return f"chdb://{self.data_dir / 'clickhouse'}"

    @property
    def databento_cache_dir(self) -> Path:
        """Where `mbo fetch` keeps what it downloaded: the configured directory (made absolute),
        else `<data dir>/databento`."""
        configured = self.databento.cache_dir
        if configured is None:
            return self.data_dir / "databento"
        return configured.expanduser().resolve()

    @property
    def processor_dir(self) -> Path:
        """The book processors' local state on this machine (Faust's data and checkpoints), a
        directory per consumer group under it: `<data dir>/processor`."""
        return self.data_dir / "processor"

    @property
    def chdb_dir(self) -> Path | None:
        """The embedded ClickHouse's directory when the URL is chdb:///abs/dir, else None (a
        server). chDB lets one process open it: the stages that need it share a process."""
        parts = urlsplit(self.clickhouse_url)
        return Path(parts.path) if parts.scheme == "chdb" else None


class _DatabentoKeySource(PydanticBaseSettingsSource):
    """DATABENTO_API_KEY from the process environment, as databento.api_key."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        key = os.environ.get(DATABENTO_KEY_VAR, "").strip()
        return {"databento": {"api_key": key}} if key else {}


def env_var_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> Iterator[str]:
    """Every environment variable the settings read, e.g. MBO_KAFKA__BOOTSTRAP_SERVERS."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from env_var_names(annotation, f"{prefix}{name.upper()}{NESTED_DELIMITER}")
        else:
            yield f"{prefix}{name.upper()}"


def _secret_var_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _secret_var_names(annotation, f"{prefix}{name.upper()}{NESTED_DELIMITER}")
        elif SecretStr in (annotation, *get_args(annotation)):
            names.add(f"{prefix}{name.upper()}")
    return names


def _var_name(loc: tuple[int | str, ...]) -> str:
    # Loc segments of a nested model field map one-to-one onto the __-separated env name.
    named = [str(part).upper() for part in loc if isinstance(part, str)]
    return ENV_PREFIX + NESTED_DELIMITER.join(named)


def _redact(value: object) -> object:
    # A URL may carry user:password even though it should not; never echo them.
    return _URL_USERINFO.sub(r"\1***@", value) if isinstance(value, str) else value


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad variable, its value (unless secret) and what is wrong."""
    secrets = _secret_var_names()
    known = set(env_var_names())
    problems = []
    for detail in error.errors(include_url=False):
        var = _var_name(detail["loc"])
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            problems.append(f"{var} is not a known setting")
        elif var not in known:
            problems.append(message)  # model-level checks name their variables themselves
        elif var in secrets or detail["type"] == "missing":
            problems.append(f"{var}: {message}")
        else:
            problems.append(f"{var}={_redact(detail['input'])!r}: {message}")
    return "invalid settings: " + "; ".join(problems)


def _check_known(names: Mapping[str, str | None], where: str) -> None:
    known = set(env_var_names()) | {ENV_FILE_VAR, SECRETS_DIR_VAR}
    for name in names:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            close = difflib.get_close_matches(upper, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise MboError(f"invalid settings: unknown variable {upper} in {where}{hint}")


def _profile_of(env_file: Path | None, environ: Mapping[str, str]) -> str:
    for name, value in environ.items():
        if name.upper() == "MBO_PROFILE":
            return value.strip().lower()
    if env_file is not None and env_file.is_file():
        for key, text in dotenv.dotenv_values(env_file).items():
            if key.upper() == "MBO_PROFILE" and text is not None:
                return text.strip().lower()
    return "dev"


def load_settings(
    *,
    env_file: Path | Literal["default"] | None = "default",
    secrets_dir: Path | Literal["default"] | None = "default",
    **overrides: Any,
) -> Settings:
    """Validated settings, or MboError naming the bad variable. Call once at start.

    env_file: the .env file (default: MBO_ENV_FILE or ./.env; None: no file); a `.env.<profile>`
    next to it is read too and wins over it. secrets_dir: where secret files live (default:
    MBO_SECRETS_DIR, else /run/secrets if it exists). overrides: keyword values that win over
    everything (e.g. `profile="prod"` or `kafka={"bootstrap_servers": ...}` from a CLI flag).
    """
    environ = dict(os.environ)
    if env_file == "default":
        env_file = Path(environ.get(ENV_FILE_VAR, ".env"))
    if secrets_dir == "default":
        configured = environ.get(SECRETS_DIR_VAR)
        if configured:
            secrets_dir = Path(configured)
            if not secrets_dir.is_dir():
                raise MboError(
                    f"invalid settings: {SECRETS_DIR_VAR}={configured!r} is not a directory"
                )
        else:
            secrets_dir = DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None

    _check_known(environ, "the environment")
    env_files: list[Path] = []
    if env_file is not None:
        profile = str(overrides.get("profile") or _profile_of(env_file, environ))
        env_files = [env_file, env_file.with_name(f"{env_file.name}.{profile}")]
        for path in env_files:
            if path.is_file():
                _check_known(dotenv.dotenv_values(path), str(path))
    try:
        return Settings(
            _env_file=tuple(env_files) or None,  # type: ignore[call-arg]
            _secrets_dir=secrets_dir,
            **overrides,
        )
    except ValidationError as exc:
        raise MboError(describe_validation_error(exc)) from None
