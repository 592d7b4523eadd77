#!/usr/bin/env python3
"""Container health check of every `mbo` stage: exit 0 if the stage's HTTP endpoint answers 200.

The image's HEALTHCHECK runs this. It reads the stage from the container's main process
(`mbo produce|process|sink|api ...`, /proc/1/cmdline) and the port from the same settings the
stage uses (`--metrics-port`, `--worker-index`, `--port`, MBO_METRICS__*, MBO_API__PORT), so one
image checks any stage without per-stage configuration. HEALTHCHECK_URL overrides the choice.

- produce / process / sink: the Prometheus endpoint /metrics on the metrics port;
- api: /healthz (liveness) on the API port.

Standard library only, so it starts fast; the defaults must equal mbo_core.settings' defaults
(tests/infra checks that).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_PORTS = {
    "produce": ("MBO_METRICS__PRODUCER_PORT", 9101),
    "process": ("MBO_METRICS__PROCESSOR_PORT", 9110),
    "sink": ("MBO_METRICS__SINK_PORT", 9102),
    "api": ("MBO_API__PORT", 8000),
}
TIMEOUT_S = 3.0


def _option(argv: Sequence[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in argv, the last one winning."""
    found = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found


def health_url(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The URL that tells whether the stage started as `argv` (`mbo STAGE ...`) is healthy."""
    if env.get("HEALTHCHECK_URL"):
        return env["HEALTHCHECK_URL"]
    stage = next((arg for arg in argv[1:] if arg in DEFAULT_PORTS), None)
    if stage is None:
        raise ValueError(f"not a stage command line: {' '.join(argv)!r}")
    variable, default = DEFAULT_PORTS[stage]
    if stage == "api":
        port = int(_option(argv, "--port") or env.get(variable) or default)
        return f"http://127.0.0.1:{port}/healthz"
    explicit = _option(argv, "--metrics-port")
    if explicit is not None:
        port = int(explicit)
    else:
        port = int(env.get(variable) or default)
        if stage == "process":
            port += int(_option(argv, "--worker-index") or 0)
    if port == 0:
        raise ValueError("the stage serves no metrics (port 0): set HEALTHCHECK_URL")
    return f"http://127.0.0.1:{port}/metrics"


def main_process_argv() -> list[str]:
    raw = Path("/proc/1/cmdline").read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def main() -> int:
    try:
        url = health_url(main_process_argv(), os.environ)
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            ok = response.status == 200
    except (OSError, ValueError, urllib.error.URLError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print(f"unhealthy: {url} answered {response.status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
