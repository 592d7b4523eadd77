"""`mbo fetch` through the installed console script, against a fake Historical gateway over
HTTPS on loopback (tests/databento_fakes.py): no internet, no real key.

What the gateway sends is `BODY`, CLX5 compressed with zstandard (its real DBN metadata); the
file `mbo fetch` writes must be that, byte for byte (the zstd stream as sent; decompressed, the
CLX5 file itself).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from tests.databento_fakes import COST_PATH, RANGE_PATH, FakeHistorical, make_certificate
from tests.paths import CLX5, MBO

KEY = "db-TESTKEYabcdefghijklmnopqrstu"  # the fake's, Databento's shape (db- and 29 more)
ARGS = (
    "--dataset",
    "GLBX.MDP3",
    "--symbols",
    "CLX5",
    "--start",
    "2025-09-24",
    "--end",
    "2025-09-25",
)
BODY = zstandard.ZstdCompressor(level=3).compress(CLX5.read_bytes())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    try:
        return make_certificate(tmp_path_factory.mktemp("tls"))
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def gateway(certificate: tuple[Path, Path]) -> Iterator[FakeHistorical]:
    cert, key = certificate
    fake = FakeHistorical(
        body=BODY,
        cert=cert,
        cert_key=key,
        keys=frozenset({KEY}),
        unlicensed_keys=frozenset({"db-NOLICENSEabcdefghijklmnopq"}),
    )
    with fake:
        yield fake
    assert not fake.running  # nothing left running


class Fetch:
    """Runs `mbo fetch` as a user would, in a directory of its own, with only the settings
    given: the gateway's address and certificate, a data dir, and the key unless told not."""

    def __init__(self, tmp_path: Path, gateway: FakeHistorical) -> None:
        self.home = tmp_path
        self.gateway = gateway
        self.data_dir = tmp_path / "data"
        (tmp_path / "secrets").mkdir()

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "databento"

    def __call__(
        self, *args: str | Path, key: str | None = KEY, **env: str
    ) -> subprocess.CompletedProcess[str]:
        environ = {
            name: value
            for name, value in os.environ.items()
            if not name.upper().startswith(("MBO_", "DATABENTO_")) and "PROXY" not in name.upper()
        }
        environ |= {
            "REQUESTS_CA_BUNDLE": str(self.gateway.cert),
            "MBO_DATABENTO__HISTORICAL_GATEWAY": self.gateway.url,
            "MBO_DATA_DIR": str(self.data_dir),
            "MBO_SECRETS_DIR": str(self.home / "secrets"),
            **env,
        }
        if key is not None:
            environ["DATABENTO_API_KEY"] = key
        return subprocess.run(
            [MBO, "fetch", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.home,
            env=environ,
        )

    def cache_files(self) -> list[Path]:
        if not self.cache_dir.exists():
            return []
        return sorted(path for path in self.cache_dir.rglob("*") if path.is_file())


@pytest.fixture
def fetch(tmp_path: Path, gateway: FakeHistorical) -> Fetch:
    return Fetch(tmp_path, gateway)


def one_error_line(run: subprocess.CompletedProcess[str], *, alone: bool = True) -> str:
    """The error line of a failed run: its only line on stderr, or (not alone) its last, after
    notices such as the cost."""
    assert run.returncode == 2, run.stderr
    *before, line = run.stderr.splitlines()
    assert line.startswith("mbo: error: ")
    assert not before if alone else all(n.startswith("mbo fetch: ") for n in before), run.stderr
    return line


def test_fetch_writes_what_the_gateway_sent_and_mbo_book_reads_it(
    fetch: Fetch, gateway: FakeHistorical, tmp_path: Path
) -> None:
    out = tmp_path / "clx5.dbn.zst"
    run = fetch(*ARGS, "-o", out)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{out}\n"
    assert out.read_bytes() == BODY  # the zstd stream as sent
    assert zstandard.ZstdDecompressor().decompress(out.read_bytes()) == CLX5.read_bytes()
    assert "costs $0.0412 (limit $5.00" in run.stderr
    assert "38,212 records" in run.stderr
    # What the client asked: exactly one quote, then one download, with the key as user.
    assert [r.path for r in gateway.requests] == [COST_PATH, RANGE_PATH]
    assert {r.user for r in gateway.requests} == {KEY}
    (form,) = gateway.forms(RANGE_PATH)
    assert form == {
        "dataset": "GLBX.MDP3",
        "symbols": "CLX5",
        "schema": "mbo",
        "stype_in": "raw_symbol",
        "stype_out": "instrument_id",
        "start": "1758672000000000000",  # 2025-09-24T00:00:00Z
        "end": "1758758400000000000",
        "encoding": "dbn",
        "compression": "zstd",
    }
    # The cache holds the file (read-only) and a sidecar; nothing half-written, no key anywhere.
    names = [path.name for path in fetch.cache_files()]
    assert len(names) == 3 and not [n for n in names if n.endswith((".part", ".tmp"))]
    (data,) = fetch.cache_dir.glob("GLBX.MDP3/mbo-*.dbn.zst")
    assert data.read_bytes() == BODY and data.stat().st_mode & 0o222 == 0
    info = json.loads(data.with_suffix("").with_suffix(".json").read_text())
    assert (info["records"], info["bytes"], info["cost_usd"]) == (38_212, len(BODY), 0.0412)
    for path in fetch.cache_files():
        assert KEY.encode() not in path.read_bytes()
    assert KEY not in run.stdout + run.stderr

    book = subprocess.run(
        [MBO, "book", out], capture_output=True, text=True, timeout=300, check=False
    )
    assert book.returncode == 0, book.stderr
    assert json.loads(book.stdout)["records"] == 38_212


def test_without_o_the_cached_file_is_printed(fetch: Fetch) -> None:
    run = fetch(*ARGS)
    assert run.returncode == 0, run.stderr
    printed = Path(run.stdout.strip())
    assert printed.parent == fetch.cache_dir / "GLBX.MDP3" and printed.read_bytes() == BODY


def test_the_same_request_again_is_served_from_the_cache(
    fetch: Fetch, gateway: FakeHistorical, tmp_path: Path
) -> None:
    first = fetch(*ARGS, "-o", tmp_path / "first.dbn.zst")
    assert first.returncode == 0, first.stderr
    asked = len(gateway.requests)
    # The same request written otherwise (case, symbol list, time format), into a plain .dbn,
    # and without any key: nothing goes to the gateway.
    plain = tmp_path / "again.dbn"
    again = fetch(
        "--dataset", "glbx.mdp3", "--symbols", "CLX5,CLX5", "--stype-in", "raw_symbol",
        "--start", "2025-09-24T00:00:00Z", "--end", "1758758400000000000", "-o", plain,
        key=None,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert len(gateway.requests) == asked  # no get_range, no get_cost
    assert gateway.count(RANGE_PATH) == 1
    assert "served from cache" in again.stderr and "$0.0412" in again.stderr
    assert plain.read_bytes() == CLX5.read_bytes()  # decompressed, as its name asks
    # Another request (one more day) is another entry, and is paid.
    other = fetch(*ARGS[:-1], "2025-09-26")
    assert other.returncode == 0, other.stderr
    assert gateway.count(RANGE_PATH) == 2


def test_a_request_above_the_cost_limit_needs_yes(fetch: Fetch, gateway: FakeHistorical) -> None:
    gateway.cost_usd = 12.5
    refused = fetch(*ARGS)
    line = one_error_line(refused)
    assert "costs $12.50, more than the cost limit of $5.00" in line and "--yes" in line
    assert gateway.count(COST_PATH) == 1 and gateway.count(RANGE_PATH) == 0
    assert not list(fetch.cache_dir.glob("*/*.dbn.zst"))

    lower = fetch(*ARGS, MBO_DATABENTO__COST_LIMIT_USD="1")
    assert "more than the cost limit of $1.00" in one_error_line(lower)
    raised = fetch(*ARGS, "--cost-limit", "20")
    assert raised.returncode == 0, raised.stderr
    assert gateway.count(RANGE_PATH) == 1


def test_yes_pays_above_the_limit(fetch: Fetch, gateway: FakeHistorical) -> None:
    gateway.cost_usd = 12.5
    run = fetch(*ARGS, "--yes")
    assert run.returncode == 0, run.stderr
    assert "costs $12.50" in run.stderr and "confirmed with --yes" in run.stderr
    assert gateway.count(RANGE_PATH) == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "db-WRONGKEYabcdefghijklmnopqrs",
            "401 auth_authentication_failed: Authentication failed.",
        ),
        ("db-NOLICENSEabcdefghijklmnopq", "403 auth_no_dataset_entitlement: No license for"),
    ],
)
def test_a_rejected_key_is_one_line_with_the_gateways_message(
    fetch: Fetch, gateway: FakeHistorical, key: str, message: str
) -> None:
    line = one_error_line(fetch(*ARGS, key=key))
    assert line.startswith("mbo: error: Databento metadata.get_cost: ") and message in line
    assert key not in line
    assert gateway.count(RANGE_PATH) == 0


def test_a_missing_key_is_one_line_and_nothing_is_asked(
    fetch: Fetch, gateway: FakeHistorical
) -> None:
    line = one_error_line(fetch(*ARGS, key=None))
    assert "no Databento API key" in line and "DATABENTO_API_KEY" in line
    assert gateway.requests == []


def test_the_key_may_come_from_a_secret_file(fetch: Fetch, gateway: FakeHistorical) -> None:
    (fetch.home / "secrets" / "MBO_DATABENTO__API_KEY").write_text(KEY + "\n")
    run = fetch(*ARGS, key=None)
    assert run.returncode == 0, run.stderr
    assert {r.user for r in gateway.requests} == {KEY}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--dataset", "GLBX.MDP9", "--symbols", "CLX5"),
            "Databento metadata.get_cost: 422 dataset_invalid: Unknown dataset 'GLBX.MDP9'.",
        ),
        (
            ("--dataset", "GLBX.MDP3", "--symbols", "CLX9,CLZ9"),
            "422 symbology_invalid_request: None of the symbols could be resolved: "
            "documentation: https://databento.com/docs/",
        ),
    ],
)
def test_an_unknown_dataset_or_symbol_is_the_gateways_one_line(
    fetch: Fetch, gateway: FakeHistorical, args: tuple[str, ...], message: str
) -> None:
    line = one_error_line(fetch(*args, "--start", "2025-09-24", "--end", "2025-09-25"))
    assert message in line
    assert gateway.count(RANGE_PATH) == 0


def test_a_broken_download_leaves_nothing_and_is_fetched_again(
    fetch: Fetch, gateway: FakeHistorical, tmp_path: Path
) -> None:
    gateway.cut_after = len(BODY) // 2
    out = tmp_path / "cut.dbn.zst"
    line = one_error_line(fetch(*ARGS, "-o", out), alone=False)
    assert "Databento timeseries.get_range: Error streaming response" in line
    assert not out.exists()
    assert [p.suffix for p in fetch.cache_files()] == [".lock"]
    gateway.cut_after = None
    again = fetch(*ARGS, "-o", out)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == BODY and gateway.count(RANGE_PATH) == 2


def test_a_truncated_answer_is_refused(fetch: Fetch, gateway: FakeHistorical) -> None:
    # A whole HTTP answer whose zstd DBN stops mid-record: not cached, not paid twice unseen.
    gateway.body = zstandard.ZstdCompressor().compress(CLX5.read_bytes()[:-20])
    line = one_error_line(fetch(*ARGS), alone=False)
    assert "the gateway's answer is not a whole DBN MBO file" in line and "truncated" in line
    assert not list(fetch.cache_dir.glob("*/*.dbn.zst"))


def test_the_gateways_warnings_are_shown(fetch: Fetch, gateway: FakeHistorical) -> None:
    gateway.warning = "Warning: The request contains degraded days: 2025-09-24."
    run = fetch(*ARGS)
    assert run.returncode == 0, run.stderr
    assert (
        "mbo fetch: Databento timeseries.get_range warns: The request contains degraded days: "
        "2025-09-24.\n" in run.stderr
    )


def test_an_unreachable_gateway_is_one_line(fetch: Fetch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nobody listens there
    line = one_error_line(
        fetch(*ARGS, MBO_DATABENTO__HISTORICAL_GATEWAY=f"https://127.0.0.1:{port}")
    )
    assert f"cannot reach the Databento gateway https://127.0.0.1:{port}" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((*ARGS[:-1], "2025-09-23"), "end 2025-09-23T00:00:00Z is not after start"),
        ((*ARGS[:5], "yesterday", *ARGS[6:]), "start 'yesterday': expected an ISO 8601 time"),
        (("--dataset", "../x", *ARGS[2:]), "dataset '../x': expected a dataset code"),
        (("--dataset", "GLBX.MDP3", "--symbols", " , ", *ARGS[4:]), "symbols: give at least one"),
    ],
)
def test_bad_arguments_ask_nothing(
    fetch: Fetch, gateway: FakeHistorical, args: tuple[str, ...], message: str
) -> None:
    assert message in one_error_line(fetch(*args))
    assert gateway.requests == []
