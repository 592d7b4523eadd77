# Set-up and everyday commands. Everything installs into the checkout (.tools/ for Poetry, .venv/ for
# the project), so a fresh Debian machine with Python 3.11 needs nothing else.
SHELL := /bin/bash
PYTHON ?= python3
POETRY_VERSION := 2.5.1
# The registry mirror on our machines serves only the PEP 503 HTML index, which Poetry's own PyPI
# client does not read; this plugin points Poetry at the same index pip uses (PIP_INDEX_URL or
# pip's default), read through Poetry's standards-based legacy client.
PYPI_MIRROR_PLUGIN_VERSION := 0.6.5
TOOLS := .tools
POETRY := $(TOOLS)/bin/poetry
export POETRY_VIRTUALENVS_IN_PROJECT := true
export POETRY_PYPI_MIRROR_URL ?= $(shell $(PYTHON) -c "import os; from pip._internal.models.index import PyPI; print(os.environ.get('PIP_INDEX_URL') or PyPI.simple_url)")
# Apache Kafka for the local broker: the jars of infra/kafka/pom.xml from Maven Central, with
# Maven's checksum checks made fatal; Maven's repository stays inside the checkout too.
KAFKA_DIR := $(TOOLS)/kafka
MVN_FLAGS := -q -B -Dstyle.color=never --strict-checksums -Dmaven.repo.local=$(abspath $(TOOLS)/m2)
DATA ?= ../shared/data/CLX5_mbo.dbn
OUT ?= out

.PHONY: setup run book test lint typecheck browser sbom audit clean

$(POETRY):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "poetry==$(POETRY_VERSION)" "poetry-plugin-pypi-mirror==$(PYPI_MIRROR_PLUGIN_VERSION)"

# --compile: bytecode for every installed module. Python writes none where PYTHONDONTWRITEBYTECODE
# is set (our machines, most container images), and then compiled numba, Faust, FastAPI, ... from
# source at every process start: the book processor's imports 1.3 -> 0.66 s with it, `mbo book`
# of 5M records 3.6 -> 2.6 s. compileall does the same for this checkout's own packages.
.venv/.installed: $(POETRY) pyproject.toml poetry.lock
	$(POETRY) install --sync --no-interaction --compile
	$(POETRY) run python -m compileall -q -j 0 api bench book_processor generator mbo_cli mbo_core producer sink tests >/dev/null
	touch $@

# The web page: copies the page and its pinned npm packages (lightweight-charts) into ui/dist.
# Node.js and npm come from Debian when the machine has none.
ui/dist/index.html: ui/package.json ui/package-lock.json ui/build.mjs ui/index.html ui/app.js ui/style.css
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	cd ui && npm ci --no-audit --no-fund && npm run build

# Java 17+ and Maven come from Debian when the machine lacks them.
$(KAFKA_DIR)/.installed: infra/kafka/pom.xml
	@java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])' && command -v mvn >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven; }
	rm -rf $(KAFKA_DIR)/libs
	mvn $(MVN_FLAGS) -f infra/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(abspath $(KAFKA_DIR)/libs)
	touch $@

# The JVM class archive of that Kafka (CDS): the broker then starts in ~1.5 s instead of ~2.7 s,
# with ~1 CPU-s less (mbo_core/kafka/broker.py, build_class_archive). Tied to this JDK and these jars.
# The same step keeps the storage template (bootstrap-<version>.checkpoint, storage_template).
$(KAFKA_DIR)/kafka-classes.jsa: $(KAFKA_DIR)/.installed .venv/.installed
	$(POETRY) run mbo infra class-archive

setup: .venv/.installed ui/dist/index.html $(KAFKA_DIR)/.installed $(KAFKA_DIR)/kafka-classes.jsa

## Chromium (Debian's package) for the browser test of the web page.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## The main job, end to end on the local defaults: the file through Kafka, the book processor
## and ClickHouse (local broker + embedded chDB under $(OUT)/data), then the report.
run: setup
	mkdir -p $(OUT)
	rm -rf $(OUT)/data
	$(POETRY) run mbo run --replay $(DATA) --until-drained --data-dir $(OUT)/data --report $(OUT)/report.json

## The books of the file, offline (no Kafka): final books and the book after every event.
book: setup
	mkdir -p $(OUT)
	$(POETRY) run mbo book $(DATA) --depth 10 -o $(OUT)/final.json --events $(OUT)/events.jsonl

## The whole test suite: lint, types, unit, property, golden and integration tests; and the SBOMs,
## so that CI builds them on every run (~3 s).
test: setup browser lint typecheck sbom
	$(POETRY) run pytest

lint: setup
	$(POETRY) run ruff check .
	$(POETRY) run ruff format --check .

typecheck: setup
	$(POETRY) run mypy
	$(POETRY) run mypy infra/supply-chain/sbom.py infra/supply-chain/audit.py

## CycloneDX SBOMs of the Python (poetry.lock, main + dev groups) and npm (ui/package-lock.json)
## dependencies: sbom/python.cdx.json and sbom/ui.cdx.json, schema-checked (docs/supply-chain.md).
sbom: .venv/.installed ui/dist/index.html
	$(POETRY) run python infra/supply-chain/sbom.py

## pip-audit and npm audit over the packages of those SBOMs, each only where its vulnerability
## database answers a probe (5 s); where not, it says SKIPPED and nothing was checked. Exit 0 only
## when both ran and found nothing (the script: 1 vulnerable, 2 not checked; make turns any failure
## into 2). Our machines reach neither database, so here it always fails (docs/supply-chain.md).
audit: sbom
	$(POETRY) run python infra/supply-chain/audit.py

clean:
	rm -rf $(TOOLS) .venv .mypy_cache .ruff_cache .pytest_cache $(OUT) ui/dist ui/node_modules sbom
