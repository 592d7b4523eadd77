"""Each stage started as its container starts it: `mbo <stage> ...` (the image's ENTRYPOINT and
the command of docker-compose.yml), settings only from the environment, against the session's
real broker. The test waits for the stage's health URL (the one the image's HEALTHCHECK and the
Kubernetes probes use) to answer 200, then stops it with SIGTERM, as `docker stop` and Kubernetes
do, and expects a clean exit."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mbo_core.kafka import probes
from mbo_core.settings import ENV_PREFIX
from tests.paths import CLX5, MBO, REPO

pytestmark = pytest.mark.integration

HEALTHCHECK = REPO / "infra" / "docker" / "healthcheck.py"
HEALTHY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
#: What a stage logs once it runs and handles SIGTERM. /metrics of the processor and the sink
#: answer earlier (from before their heavy imports and numba warm-up), and a SIGTERM before their
#: handlers are installed kills the process (exit 143 in a container): harmless, nothing is
#: committed yet, but not the clean stop this test checks.
READY_LINES = {
    "process": "[^Worker]: Ready",
    "sink": "sink consuming",
    "api": "Application startup complete",
}


def _stages() -> list[str]:
    stages = ["produce", "process", "sink"]
    if (REPO / "mbo_cli" / "api.py").exists():
        stages.append("api")
    return stages


@pytest.fixture
def container_env(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> dict[str, str]:
    """The environment a container gets: MBO_* settings only, no .env, no CLI flags. ClickHouse
    is a chDB directory of this test's own (one process per chDB directory)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    env.update(
        MBO_PROFILE="dev",
        MBO_DATA_DIR=str(tmp_path / "data"),
        MBO_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        MBO_KAFKA__PROCESSOR_GROUP_ID=f"{unique_prefix}-processor",
        MBO_KAFKA__SINK_GROUP_ID=f"{unique_prefix}-sink",
        MBO_TOPICS__RECORDS__NAME=f"{unique_prefix}.records",
        MBO_TOPICS__BBO__NAME=f"{unique_prefix}.bbo",
        MBO_TOPICS__SNAPSHOTS__NAME=f"{unique_prefix}.snapshots",
        MBO_TOPICS__DEAD_LETTER__NAME=f"{unique_prefix}.dead-letter",
        MBO_CLICKHOUSE__URL=f"chdb://{tmp_path / 'clickhouse'}",
        MBO_METRICS__HOST="127.0.0.1",
        MBO_API__HOST="127.0.0.1",
        MBO_METRICS__PRODUCER_PORT=str(probes.free_port("127.0.0.1")),
        MBO_METRICS__PROCESSOR_PORT=str(probes.free_port("127.0.0.1")),
        MBO_METRICS__SINK_PORT=str(probes.free_port("127.0.0.1")),
        MBO_API__PORT=str(probes.free_port("127.0.0.1")),
    )
    return env


def _command(stage: str) -> list[str]:
    """The container's command line (docker-compose.yml), minus the image's ENTRYPOINT `mbo`."""
    return {
        # Slow enough to still run when the test looks at it.
        "produce": ["produce", str(CLX5), "--rate", "200"],
        "process": ["process"],
        "sink": ["sink"],
        "api": ["api"],
    }[stage]


def _health_url(stage: str, env: dict[str, str]) -> str:
    port = {
        "produce": env["MBO_METRICS__PRODUCER_PORT"],
        "process": env["MBO_METRICS__PROCESSOR_PORT"],
        "sink": env["MBO_METRICS__SINK_PORT"],
        "api": env["MBO_API__PORT"],
    }[stage]
    return f"http://127.0.0.1:{port}/{'healthz' if stage == 'api' else 'metrics'}"


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.parametrize("stage", _stages())
def test_stage_entrypoint_becomes_healthy_and_stops_cleanly(
    stage: str,
    container_env: dict[str, str],
    tmp_path: Path,
    started: list[subprocess.Popen[bytes]],
) -> None:
    # The one-shot init container first, as in docker-compose.yml and the k8s init containers.
    init = subprocess.run(
        [MBO, "infra", "init", "--wait", "30"],
        env=container_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert init.returncode == 0, f"mbo infra init failed:\n{init.stderr}"

    log = tmp_path / f"{stage}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [MBO, *_command(stage)], env=container_env, cwd=tmp_path, stdout=out, stderr=out
        )
    started.append(process)
    url = _health_url(stage, container_env)
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while not _answers_200(url):
        assert process.poll() is None, (
            f"mbo {stage} exited with {process.returncode} before it was healthy:\n"
            f"{log.read_text(errors='replace')[-3000:]}"
        )
        assert time.monotonic() < deadline, (
            f"mbo {stage}: {url} not healthy after {HEALTHY_TIMEOUT_S:.0f} s:\n"
            f"{log.read_text(errors='replace')[-3000:]}"
        )
        time.sleep(0.5)

    # The image's HEALTHCHECK picks the same URL from the stage's command line and settings,
    # and reports it healthy.
    spec = importlib.util.spec_from_file_location("mbo_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    argv = [a.decode() for a in Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0") if a]
    assert healthcheck.health_url(argv, container_env) == url
    check = subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={**container_env, "HEALTHCHECK_URL": url},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr

    ready = READY_LINES.get(stage)
    while ready is not None and ready not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"mbo {stage}: no {ready!r} in its log"
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mbo {stage} did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM")
    output = log.read_text(errors="replace")
    if stage == "api":
        assert "Finished server process" in output, output[-3000:]
    assert code == 0, (
        f"mbo {stage} exited with {code} after SIGTERM:\n{log.read_text(errors='replace')[-3000:]}"
    )
