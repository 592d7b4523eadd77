"""mbo_core.databento.historical in process: requests as values, the cache, progress, locking,
against the fake Historical gateway of tests/databento_fakes.py (HTTPS on loopback)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from mbo_core.databento.historical import (
    CostLimitError,
    DatabentoError,
    DownloadCache,
    Fetched,
    Progress,
    RangeRequest,
    fetch,
    format_time,
    parse_time,
    usd,
)
from mbo_core.errors import InputError
from tests.databento_fakes import COST_PATH, RANGE_PATH, FakeHistorical, make_certificate
from tests.paths import CLX5

KEY = "db-TESTKEYabcdefghijklmnopqrstu"
BODY = zstandard.ZstdCompressor().compress(CLX5.read_bytes())
DAY = 86_400 * 10**9
SEP24 = 1_758_672_000 * 10**9


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2025-09-24", SEP24),
        ("2025-09-24T00:00", SEP24),
        ("2025-09-24 00:00:00Z", SEP24),
        ("2025-09-24T02:00:00+02:00", SEP24),
        ("2025-09-23T19:00:00-0500", SEP24),
        ("2025-09-24T00:00:00.000000001Z", SEP24 + 1),
        ("2025-09-24T00:00:00.5", SEP24 + 500_000_000),
        ("1758672000000000000", SEP24),
    ],
)
def test_parse_time(text: str, ns: int) -> None:
    assert parse_time(text, "start") == ns


@pytest.mark.parametrize("text", ["yesterday", "2025-13-01", "2025-09-24T25:00", "24/09/2025", ""])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(InputError, match=r"^start "):
        parse_time(text, "start")


def test_format_time() -> None:
    assert format_time(SEP24) == "2025-09-24T00:00:00Z"
    assert format_time(SEP24 + 1_500) == "2025-09-24T00:00:00.0000015Z"


def test_usd() -> None:
    assert (usd(0), usd(0.0412), usd(1), usd(1234.5)) == ("$0.00", "$0.0412", "$1.00", "$1,234.50")


def test_a_request_is_the_same_however_written() -> None:
    one = RangeRequest.of("GLBX.MDP3", "CLZ5,CLX5", "raw_symbol", "2025-09-24", "2025-09-25")
    two = RangeRequest.of(
        " glbx.mdp3", ["CLX5", "CLZ5, CLX5"], "raw_symbol", str(SEP24), "2025-09-25T00:00Z"
    )
    assert one == two and one.key == two.key
    assert one.symbols == ("CLX5", "CLZ5")
    assert one.describe() == (
        "GLBX.MDP3 mbo CLX5,CLZ5 (raw_symbol) 2025-09-24T00:00:00Z to 2025-09-25T00:00:00Z"
    )
    others = [
        RangeRequest.of("GLBX.MDP3", "CLX5,CLZ5", "parent", "2025-09-24", "2025-09-25"),
        RangeRequest.of("GLBX.MDP3", "CLX5", "raw_symbol", "2025-09-24", "2025-09-25"),
        RangeRequest.of("GLBX.MDP3", "CLX5,CLZ5", "raw_symbol", "2025-09-24", "2025-09-26"),
        RangeRequest.of("XNAS.ITCH", "CLX5,CLZ5", "raw_symbol", "2025-09-24", "2025-09-25"),
    ]
    assert len({one.key, *(other.key for other in others)}) == 5


def test_the_key_does_not_change_between_versions() -> None:
    # Entries already paid for must stay found: the key is part of the cache's format.
    request = RangeRequest.of("GLBX.MDP3", "CLX5", "raw_symbol", "2025-09-24", "2025-09-25")
    assert request.key == "bfd2e3666c4b42c252bf2af7"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    try:
        return make_certificate(tmp_path_factory.mktemp("tls"))
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def gateway(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeHistorical]:
    cert, key = certificate
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FakeHistorical(body=BODY, cert=cert, cert_key=key, keys=frozenset({KEY})) as fake:
        yield fake
    assert not fake.running


REQUEST = RangeRequest.of("GLBX.MDP3", "CLX5", "raw_symbol", "2025-09-24", "2025-09-25")


def _fetch(
    gateway: FakeHistorical | str,
    cache: DownloadCache,
    notices: list[str],
    *,
    request: RangeRequest = REQUEST,
    key: str = KEY,
    progress: Progress | None = None,
) -> Fetched:
    return fetch(
        request,
        cache=cache,
        key=key,
        gateway=gateway if isinstance(gateway, str) else gateway.url,
        cost_limit_usd=5.0,
        confirmed=False,
        notice=notices.append,
        progress=progress,
    )


def test_progress_adds_up_to_the_bytes_sent(gateway: FakeHistorical, tmp_path: Path) -> None:
    seen: list[int] = []
    notices: list[str] = []
    fetched = _fetch(gateway, DownloadCache(tmp_path), notices, progress=seen.append)
    assert not fetched.from_cache and fetched.file.records == 38_212
    assert sum(seen) == len(BODY) and all(n > 0 for n in seen)
    assert notices == [f"{REQUEST.describe()} costs $0.0412 (limit $5.00)"]


def test_a_damaged_entry_is_fetched_again(gateway: FakeHistorical, tmp_path: Path) -> None:
    cache, notices = DownloadCache(tmp_path), list[str]()
    _fetch(gateway, cache, notices)
    data = cache.data_path(REQUEST)
    data.chmod(0o644)
    data.write_bytes(BODY[:-10])
    again = _fetch(gateway, cache, notices)
    assert not again.from_cache and data.read_bytes() == BODY
    assert any("missing or damaged; fetching again" in line for line in notices)
    assert gateway.count(RANGE_PATH) == 2


def test_two_fetches_of_one_request_download_it_once(
    gateway: FakeHistorical, tmp_path: Path
) -> None:
    cache = DownloadCache(tmp_path)
    results: list[bool] = []
    notices: list[str] = []

    def one() -> None:
        got = _fetch(gateway, cache, notices)
        results.append(got.from_cache)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False, True]
    assert gateway.count(COST_PATH) == 1 and gateway.count(RANGE_PATH) == 1


def test_the_limit_is_checked_before_anything_is_downloaded(
    gateway: FakeHistorical, tmp_path: Path
) -> None:
    gateway.cost_usd = 5.01
    with pytest.raises(CostLimitError, match=r"costs \$5.01, more than the cost limit of \$5.00"):
        _fetch(gateway, DownloadCache(tmp_path), [])
    assert gateway.count(RANGE_PATH) == 0
    gateway.cost_usd = 5.0  # at the limit: fetched
    assert not _fetch(gateway, DownloadCache(tmp_path), []).from_cache
    assert gateway.count(RANGE_PATH) == 1


def test_the_key_never_shows_in_an_error(gateway: FakeHistorical, tmp_path: Path) -> None:
    gateway.keys = frozenset()
    with pytest.raises(DatabentoError) as caught:
        _fetch(gateway, DownloadCache(tmp_path), [])
    assert str(caught.value) == (
        "Databento metadata.get_cost: 401 auth_authentication_failed: Authentication failed."
    )
    assert KEY not in str(caught.value)


def test_a_key_the_client_refuses_is_one_line(tmp_path: Path) -> None:
    # The client's own check (before any request): its message names the key, which is not shown.
    with pytest.raises(DatabentoError, match="API key is currently set to") as caught:
        _fetch("https://127.0.0.1:9", DownloadCache(tmp_path), [], key="YOUR_API_KEY")
    assert "\n" not in str(caught.value)
    assert "'***'" in str(caught.value) and "YOUR_API_KEY" not in str(caught.value)


def test_an_answer_of_another_dataset_is_refused(gateway: FakeHistorical, tmp_path: Path) -> None:
    gateway.datasets = frozenset({"XNAS.ITCH"})
    request = RangeRequest.of("XNAS.ITCH", "CLX5", "raw_symbol", "2025-09-24", "2025-09-25")
    with pytest.raises(DatabentoError, match=r"sent GLBX\.MDP3 data for XNAS\.ITCH"):
        _fetch(gateway, DownloadCache(tmp_path), [], request=request)
    assert not list(tmp_path.rglob("*.dbn.zst")) and not list(tmp_path.rglob("*.part"))
