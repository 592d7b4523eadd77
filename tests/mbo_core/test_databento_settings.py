"""The `databento` settings group: where the API key comes from, the gateways, the cache dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbo_core.errors import MboError
from mbo_core.settings import DATABENTO_KEY_VAR, load_settings

KEY = "db-TESTKEY0123456789abcdefABCDEF"


@pytest.fixture(autouse=True)
def _no_vendor_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATABENTO_KEY_VAR, raising=False)


def test_no_key_by_default() -> None:
    settings = load_settings(env_file=None, secrets_dir=None)
    assert settings.databento.api_key is None
    assert settings.databento.historical_gateway == "https://hist.databento.com"
    assert settings.databento.live_port == 13000


def test_databentos_own_variable_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATABENTO_KEY_VAR, KEY)
    settings = load_settings(env_file=None, secrets_dir=None)
    assert settings.databento.api_key is not None
    assert settings.databento.api_key.get_secret_value() == KEY
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


def test_every_mbo_source_wins_over_databento_api_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(DATABENTO_KEY_VAR, "db-vendor")
    (tmp_path / "MBO_DATABENTO__API_KEY").write_text("db-from-secret-file")
    settings = load_settings(env_file=None, secrets_dir=tmp_path)
    assert settings.databento.api_key is not None
    assert settings.databento.api_key.get_secret_value() == "db-from-secret-file"
    monkeypatch.setenv("MBO_DATABENTO__API_KEY", "db-from-env")
    settings = load_settings(env_file=None, secrets_dir=tmp_path)
    assert settings.databento.api_key is not None
    assert settings.databento.api_key.get_secret_value() == "db-from-env"


def test_a_vendor_key_does_not_replace_other_databento_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DATABENTO_KEY_VAR, KEY)
    monkeypatch.setenv("MBO_DATABENTO__COST_LIMIT_USD", "0.5")
    settings = load_settings(env_file=None, secrets_dir=None)
    assert settings.databento.cost_limit_usd == 0.5
    assert settings.databento.api_key is not None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
        ("hist.databento.com", "https://hist.databento.com"),
        ("https://hist.databento.com/", "https://hist.databento.com"),
    ],
)
def test_historical_gateway(monkeypatch: pytest.MonkeyPatch, given: str, expected: str) -> None:
    monkeypatch.setenv("MBO_DATABENTO__HISTORICAL_GATEWAY", given)
    assert load_settings(env_file=None, secrets_dir=None).databento.historical_gateway == expected


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("http://127.0.0.1:8443", "only HTTPS"),
        ("https://user:pw@hist.databento.com", "no credentials"),
        ("https://hist.databento.com:99999", "https://host[:port]"),
    ],
)
def test_bad_historical_gateway(monkeypatch: pytest.MonkeyPatch, given: str, problem: str) -> None:
    monkeypatch.setenv("MBO_DATABENTO__HISTORICAL_GATEWAY", given)
    with pytest.raises(MboError, match="MBO_DATABENTO__HISTORICAL_GATEWAY") as caught:
        load_settings(env_file=None, secrets_dir=None)
    assert problem in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_live_gateway_is_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBO_DATABENTO__LIVE_GATEWAY", "glbx-mdp3.lsg.databento.com:13000")
    with pytest.raises(MboError, match="MBO_DATABENTO__LIVE_PORT"):
        load_settings(env_file=None, secrets_dir=None)


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MBO_DATA_DIR", str(tmp_path / "data"))
    assert load_settings(env_file=None).databento_cache_dir == tmp_path / "data" / "databento"
    monkeypatch.setenv("MBO_DATABENTO__CACHE_DIR", str(tmp_path / "cache"))
    assert load_settings(env_file=None).databento_cache_dir == tmp_path / "cache"


def test_a_bad_key_value_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A secret that fails validation (here: one of another group's fields) is named, not shown.
    monkeypatch.setenv("MBO_DATABENTO__API_KEY", KEY)
    monkeypatch.setenv("MBO_DATABENTO__COST_LIMIT_USD", "-1")
    with pytest.raises(MboError) as caught:
        load_settings(env_file=None, secrets_dir=None)
    assert "MBO_DATABENTO__COST_LIMIT_USD" in str(caught.value)
    assert KEY not in str(caught.value)
