"""Replay control through the API on a real broker with a small generated file: start,
idempotent start, pause (nothing more is read), resume, stop, status."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from mbo_core.replay_lock import ReplayBusyError, check_replay_lock
from producer.app import produce_file
from tests.api.pipeline import Served, serve, settings_env, wait_until
from tests.api.test_app import module_settings
from tests.conftest import ClickHouseBackend
from tests.paths import CLX5, MBO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replay_server(
    kafka_bootstrap: str,
    clickhouse_backend: ClickHouseBackend,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    files = tmp_path_factory.mktemp("replays")
    subprocess.run(
        [MBO, "generate", "--instruments", "2", "--records", "4000", "--seed", "3",
         "-o", str(files / "small.dbn")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    settings = module_settings(
        kafka_bootstrap, clickhouse_backend, files / "data", replay_dir=str(files)
    )
    # Only the producer matters here: no live consumer, no sink.
    with serve(create_app(settings, consume=False, file_replay=produce_file), settings) as server:
        yield server


def test_start_pause_resume_stop(replay_server: Served) -> None:
    with httpx.Client(base_url=replay_server.base, timeout=30) as http:
        assert http.get("/v1/replay").json()["state"] == "idle"
        assert http.get("/v1/replay/files").json()["files"] == ["small.dbn"]
        first = http.post("/v1/replay", json={"file": "small.dbn", "rate": 400})
        assert first.status_code == 202, first.text
        status = first.json()
        assert status["state"] == "running" and status["file"] == "small.dbn"
        assert status["rate"] == 400 and status["records_total"] == 4000
        again = http.post("/v1/replay", json={"file": "small.dbn", "rate": 9})
        assert again.status_code == 200
        assert again.json()["started_ns"] == status["started_ns"] and again.json()["rate"] == 400
        wait_until(lambda: http.get("/v1/replay").json()["records_sent"] > 0, 60, "no progress")
        assert http.post("/v1/replay/pause").json()["state"] == "paused"
        time.sleep(0.5)  # let the slice in flight finish
        held = http.get("/v1/replay").json()["records_sent"]
        time.sleep(1.0)
        paused = http.get("/v1/replay").json()
        assert paused["state"] == "paused" and paused["records_sent"] == held
        assert 0 < paused["progress"] < 1
        assert http.post("/v1/replay/resume").json()["state"] == "running"
        wait_until(lambda: http.get("/v1/replay").json()["records_sent"] > held, 60, "no resume")
        stopped = http.post("/v1/replay/stop").json()
        assert stopped["state"] == "stopped" and stopped["records_sent"] < 4000
        # A stopped replay may be started again, flat out this time, to its end.
        assert http.post("/v1/replay", json={"file": "small.dbn"}).status_code == 202
        done = wait_until(
            lambda: (s := http.get("/v1/replay").json())["state"] == "finished" and s,
            120,
            "the second replay did not finish",
        )
        assert done["records_sent"] == 4000 and done["progress"] == 1.0
        outside = http.post("/v1/replay", json={"file": str(CLX5)})
        assert outside.status_code == 403


def test_replay_off_without_directory(tmp_path: Path) -> None:
    from tests.api.pipeline import run_async  # noqa: PLC0415
    from tests.conftest import make_settings  # noqa: PLC0415

    app = create_app(make_settings(data_dir=tmp_path), consume=False, file_replay=produce_file)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return await http.post("/v1/replay", json={"file": "x.dbn"})

    response = run_async(call())
    assert response.status_code == 403 and "MBO_API__REPLAY_DIR" in response.json()["detail"]


def test_a_replay_by_another_process_is_refused_until_it_ends(replay_server: Served) -> None:
    settings = replay_server.settings
    assert settings.api.replay_dir is not None
    small = Path(settings.api.replay_dir) / "small.dbn"
    producer = subprocess.Popen(
        [MBO, "produce", str(small), "--rate", "200", "--metrics-port", "0"],
        env=settings_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def locked() -> bool:
        try:
            check_replay_lock(settings)
        except ReplayBusyError:
            return True
        return False

    try:
        with httpx.Client(base_url=replay_server.base, timeout=30) as http:
            wait_until(locked, 60, "`mbo produce` did not take the replay lock")
            refused = http.post("/v1/replay", json={"file": "small.dbn"})
            assert refused.status_code == 409, refused.text
            assert "small.dbn at 200 records/s" in refused.json()["detail"]
            status = http.get("/v1/replay").json()
            assert status["state"] not in ("running", "paused")
            # The other replay shows, named by its lock line.
            assert "small.dbn at 200 records/s" in status["other_replay"]
            producer.send_signal(signal.SIGINT)
            assert producer.wait(30) == 0
            assert http.get("/v1/replay").json()["other_replay"] is None
            started = http.post("/v1/replay", json={"file": "small.dbn", "rate": 400})
            assert started.status_code == 202, started.text
            assert http.post("/v1/replay/stop").json()["state"] == "stopped"
    finally:
        producer.kill()
        producer.wait()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"file": "x.dbn", "rate": NaN}', "rate"),
        ('{"file": "x.dbn", "rate": Infinity}', "rate"),
        ('{"file": "x.dbn", "rate": 1e400}', "rate"),
        ('{"file": "x.dbn", "speed": -Infinity}', "speed"),
        ('{"file": "x.dbn", "rate": 1e-300}', "rate"),
        ('{"file": "x.dbn", "speed": 1e-9}', "speed"),
    ],
)
def test_non_finite_or_absurd_pace_is_a_422_naming_the_field(
    tmp_path: Path, body: str, field: str
) -> None:
    # Python's JSON parser reads NaN, Infinity and 1e400; they once answered 500.
    from tests.api.pipeline import run_async  # noqa: PLC0415
    from tests.conftest import make_settings  # noqa: PLC0415

    settings = make_settings(data_dir=tmp_path, api={"replay_dir": str(tmp_path)})
    app = create_app(settings, consume=False, file_replay=produce_file)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            headers = {"content-type": "application/json"}
            return await http.post("/v1/replay", content=body, headers=headers)

    response = run_async(call())
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", field]


def test_the_file_list_skips_hidden_deep_and_vanishing_entries(tmp_path: Path) -> None:
    from api.replay_control import ReplayController  # noqa: PLC0415
    from tests.conftest import make_settings  # noqa: PLC0415

    for name in ["a.dbn", "sub/b.dbn.zst", "sub/notes.txt", ".profile/c.dbn",
                 "one/two/three/four/deep.dbn", "one/two/d.dbn"]:  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "gone.dbn").symlink_to(tmp_path / "nowhere.dbn")  # a file that vanished
    controller = ReplayController(make_settings(api={"replay_dir": str(tmp_path)}), None)
    assert controller.files() == ["a.dbn", "one/two/d.dbn", "sub/b.dbn.zst"]
