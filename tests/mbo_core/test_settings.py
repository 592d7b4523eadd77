"""Settings: defaults, environment, .env files, profiles, secrets, and readable failures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from mbo_core.errors import MboError
from mbo_core.settings import (
    ENV_FILE_VAR,
    SECRETS_DIR_VAR,
    Settings,
    env_var_names,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Run from an empty directory (no .env) with no MBO_ variable set."""
    monkeypatch.chdir(tmp_path)
    yield


def _error(**kwargs: object) -> str:
    with pytest.raises(MboError) as caught:
        load_settings(**kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message, "errors must fit on one line"
    return message


def test_defaults_are_the_dev_profile(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.profile == "dev"
    assert settings.data_dir == tmp_path / "data"
    assert settings.kafka.bootstrap_servers is None  # the local broker of `mbo infra up`
    assert (settings.kafka.session_timeout_ms, settings.kafka.heartbeat_interval_ms) == (2000, 500)
    assert settings.kafka.acks == "all"
    assert [settings.topics.records.name, settings.topics.bbo.name] == ["mbo.records", "mbo.bbo"]
    assert settings.topics.snapshots.name == "mbo.snapshots"
    assert settings.topics.records.partitions == 8
    # Records forever (rebuilds read from offset 0), snapshots 30 days, BBO 7 days.
    day_ms = 24 * 3600 * 1000
    assert settings.topics.records.retention_ms == -1
    assert settings.topics.snapshots.retention_ms == 30 * day_ms
    assert settings.topics.bbo.retention_ms == 7 * day_ms
    assert settings.topics.replication_factor == 1
    assert settings.clickhouse.url is None
    assert settings.clickhouse_url == f"chdb://{tmp_path}/data/clickhouse"
    assert settings.chdb_dir == tmp_path / "data" / "clickhouse"
    assert settings.processor_dir == tmp_path / "data" / "processor"
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 8000)
    assert (settings.log.level, settings.log.format) == ("INFO", "text")
    assert settings.kafka.processor_group_id != settings.kafka.sink_group_id


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_KAFKA__BOOTSTRAP_SERVERS", "k1:9092, k2:9093")
    monkeypatch.setenv("MBO_TOPICS__RECORDS__PARTITIONS", "4")
    monkeypatch.setenv("MBO_TOPICS__BBO__NAME", "custom.bbo")
    monkeypatch.setenv("MBO_LOG__LEVEL", "debug")
    monkeypatch.setenv("MBO_CLICKHOUSE__URL", "http://ch.internal:8123/")
    monkeypatch.setenv("MBO_API__PORT", "9000")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9093"
    assert settings.topics.records.partitions == 4
    assert settings.topics.records.name == "mbo.records"  # the rest of the group keeps defaults
    assert settings.topics.bbo.name == "custom.bbo"
    assert settings.log.level == "DEBUG"
    assert settings.clickhouse_url == "http://ch.internal:8123"
    assert settings.chdb_dir is None  # a server, not the embedded engine
    assert settings.api.port == 9000


def test_dotenv_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "# comment\nMBO_KAFKA__CLIENT_ID=from-dotenv\nMBO_API__PORT=8100\nMBO_DATA_DIR=state\n"
    )
    monkeypatch.setenv("MBO_API__PORT", "8200")
    settings = load_settings()
    assert settings.kafka.client_id == "from-dotenv"
    assert settings.api.port == 8200
    assert settings.data_dir == tmp_path / "state"


def test_other_tools_variables_in_dotenv_are_left_alone(tmp_path: Path) -> None:
    # docker compose reads the same .env (docker-compose.yml needs CLICKHOUSE_PASSWORD).
    (tmp_path / ".env").write_text(
        "CLICKHOUSE_PASSWORD=x\nCLICKHOUSE_USER=mbo\nMBO_API__PORT=8001\n"
    )
    assert load_settings().api.port == 8001


def test_env_file_location_from_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    custom = tmp_path / "conf" / "pipeline.env"
    custom.parent.mkdir()
    custom.write_text("MBO_KAFKA__CLIENT_ID=custom-file\n")
    monkeypatch.setenv(ENV_FILE_VAR, str(custom))
    assert load_settings().kafka.client_id == "custom-file"
    assert load_settings(env_file=None).kafka.client_id == "mbo"


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("staging", {"session": 10_000, "heartbeat": 3000, "replication": 3, "log": "json"}),
        ("prod", {"session": 45_000, "heartbeat": 3000, "replication": 3, "log": "json"}),
        ("dev", {"session": 2000, "heartbeat": 500, "replication": 1, "log": "text"}),
    ],
)
def test_profiles_change_defaults(
    monkeypatch: pytest.MonkeyPatch, profile: str, expected: dict[str, object]
) -> None:
    monkeypatch.setenv("MBO_PROFILE", profile)
    monkeypatch.setenv("MBO_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("MBO_CLICKHOUSE__URL", "https://clickhouse:8443")
    settings = load_settings()
    assert settings.profile == profile
    assert settings.kafka.session_timeout_ms == expected["session"]
    assert settings.kafka.heartbeat_interval_ms == expected["heartbeat"]
    assert settings.kafka.request_timeout_ms > settings.kafka.session_timeout_ms
    # Kafka answers a held fetch when data arrives: the wait bounds idle polling only.
    assert settings.kafka.processor_fetch_max_wait_ms == 500
    assert settings.kafka.fetch_max_wait_ms == 500
    assert settings.topics.replication_factor == expected["replication"]
    assert settings.log.format == expected["log"]


def test_profile_name_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_PROFILE", "Staging")
    monkeypatch.setenv("MBO_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("MBO_CLICKHOUSE__URL", "http://clickhouse:8123")
    settings = load_settings()
    assert (settings.profile, settings.kafka.session_timeout_ms) == ("staging", 10_000)


def test_explicit_values_beat_profile_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_PROFILE", "prod")
    monkeypatch.setenv("MBO_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("MBO_CLICKHOUSE__URL", "http://clickhouse:8123")
    monkeypatch.setenv("MBO_KAFKA__SESSION_TIMEOUT_MS", "12000")
    monkeypatch.setenv("MBO_LOG__FORMAT", "TEXT")
    settings = load_settings()
    assert settings.kafka.session_timeout_ms == 12_000
    assert settings.kafka.heartbeat_interval_ms == 3000  # still the prod default
    assert settings.log.format == "text"


def test_profile_env_file_is_read_after_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MBO_PROFILE=staging\nMBO_KAFKA__CLIENT_ID=base\n")
    (tmp_path / ".env.staging").write_text(
        "MBO_KAFKA__BOOTSTRAP_SERVERS=staging-kafka:9092\n"
        "MBO_CLICKHOUSE__URL=http://staging-ch:8123\n"
        "MBO_KAFKA__CLIENT_ID=staging\n"
    )
    settings = load_settings()
    assert settings.profile == "staging"
    assert settings.kafka.bootstrap_servers == "staging-kafka:9092"
    assert settings.kafka.client_id == "staging"


def test_prod_requires_explicit_kafka_and_clickhouse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_PROFILE", "prod")
    message = _error()
    assert "MBO_KAFKA__BOOTSTRAP_SERVERS" in message
    assert "MBO_CLICKHOUSE__URL" in message
    assert "prod" in message


def test_prod_refuses_an_open_api_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_PROFILE", "prod")
    monkeypatch.setenv("MBO_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("MBO_CLICKHOUSE__URL", "http://clickhouse:8123")
    monkeypatch.setenv("MBO_API__HOST", "0.0.0.0")
    assert "MBO_API__TOKEN" in _error()
    monkeypatch.setenv("MBO_API__TOKEN", "s3cret-token")
    assert load_settings().api.token == SecretStr("s3cret-token")


def test_bad_value_fails_fast_naming_variable_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_KAFKA__SESSION_TIMEOUT_MS", "two seconds")
    message = _error()
    assert message.startswith("invalid settings: MBO_KAFKA__SESSION_TIMEOUT_MS='two seconds': ")
    assert "integer" in message


def test_every_bad_value_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_PROFILE", "qa")
    monkeypatch.setenv("MBO_API__PORT", "70000")
    monkeypatch.setenv("MBO_TOPICS__RECORDS__PARTITIONS", "0")
    message = _error()
    for variable in (
        "MBO_PROFILE='qa'",
        "MBO_API__PORT='70000'",
        "MBO_TOPICS__RECORDS__PARTITIONS",
    ):
        assert variable in message


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MBO_KAFKA__BOOTSTRAP_SERVERS", "kafka-without-port", "host:port"),
        ("MBO_CLICKHOUSE__URL", "chdb://relative/dir", "absolute"),
        ("MBO_CLICKHOUSE__URL", "ftp://clickhouse", "chdb:///abs/dir or http(s)"),
        ("MBO_CLICKHOUSE__URL", "http://clickhouse:8123/mbo", "MBO_CLICKHOUSE__DATABASE"),
        ("MBO_CLICKHOUSE__DATABASE", "drop table", "identifier"),
        ("MBO_TOPICS__BBO__NAME", "bad topic", "topic name"),
        ("MBO_KAFKA__ACKS", "0", "all"),
        ("MBO_LOG__FORMAT", "xml", "json"),
    ],
)
def test_invalid_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    message = _error()
    assert variable in message
    assert expected in message


def test_inconsistent_kafka_timeouts_name_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_KAFKA__HEARTBEAT_INTERVAL_MS", "1000")
    message = _error()
    assert "MBO_KAFKA__HEARTBEAT_INTERVAL_MS=1000" in message
    assert "MBO_KAFKA__SESSION_TIMEOUT_MS=2000" in message


def test_sasl_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    assert "MBO_KAFKA__SASL_USERNAME" in _error()


def test_unknown_variable_is_refused_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MBO_KAFKA__BOOTSTRAP_SERVER", "kafka:9092")
    assert "did you mean MBO_KAFKA__BOOTSTRAP_SERVERS?" in _error()
    monkeypatch.delenv("MBO_KAFKA__BOOTSTRAP_SERVER")
    (tmp_path / ".env").write_text("MBO_CLICKHOUSE_URL=http://clickhouse:8123\n")
    message = _error()
    assert "MBO_CLICKHOUSE_URL" in message
    assert ".env" in message


def test_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_BROKER__JAVA", "")
    monkeypatch.setenv("MBO_KAFKA__BOOTSTRAP_SERVERS", "")
    settings = load_settings()
    assert settings.broker.java is None
    assert settings.kafka.bootstrap_servers is None


def test_secrets_from_secret_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "MBO_CLICKHOUSE__PASSWORD").write_text("ch-password\n")
    (secrets / "MBO_API__TOKEN").write_text("api-token")
    monkeypatch.setenv(SECRETS_DIR_VAR, str(secrets))
    settings = load_settings()
    assert settings.clickhouse.password.get_secret_value() == "ch-password"
    assert settings.api.token is not None
    assert settings.api.token.get_secret_value() == "api-token"
    assert "ch-password" not in repr(settings)
    assert "ch-password" not in str(settings.model_dump())
    # The environment still wins over a secret file.
    monkeypatch.setenv("MBO_CLICKHOUSE__PASSWORD", "from-env")
    assert load_settings().clickhouse.password.get_secret_value() == "from-env"


def test_missing_secrets_dir_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(SECRETS_DIR_VAR, str(tmp_path / "nowhere"))
    assert SECRETS_DIR_VAR in _error()


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_CLICKHOUSE__URL", "http://admin:hunter2@clickhouse:8123")
    message = _error()
    assert "hunter2" not in message
    assert "MBO_CLICKHOUSE__PASSWORD" in message  # says where credentials go instead
    monkeypatch.delenv("MBO_CLICKHOUSE__URL")
    monkeypatch.setenv("MBO_API__TOKEN", "x" * 5)
    monkeypatch.setenv("MBO_API__PORT", "not-a-port")
    assert "xxxxx" not in _error()


def test_keyword_overrides_win() -> None:
    settings = load_settings(
        profile="staging", kafka={"bootstrap_servers": "k:1"}, clickhouse={"url": "http://c:8123"}
    )
    assert settings.profile == "staging"
    assert settings.kafka.session_timeout_ms == 10_000


def _fields(model: type[BaseModel]) -> Iterator[tuple[str, str | None]]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation)
        yield f"{model.__name__}.{name}", field.description


def test_every_setting_is_documented() -> None:
    undocumented = [name for name, description in _fields(Settings) if not description]
    assert undocumented == []


def test_env_example_lists_every_variable() -> None:
    text = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*(MBO_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    expected = {*env_var_names(), ENV_FILE_VAR, SECRETS_DIR_VAR}
    assert listed == expected


def test_env_example_as_is_loads() -> None:
    # Everything in it is commented out, so it must load to the defaults.
    assert load_settings(env_file=REPO / ".env.example") == load_settings(env_file=None)
