"""bench.pipeline's arithmetic: CPU by stage and by phase from /proc samples, the stages named
from their command lines, and the cost per record, without running a pipeline."""

from __future__ import annotations

from bench.pipeline import _stage_name, _totals, cost

# Two processes of the same stage (a restarted worker) and the broker, sampled at t = 10, 11, 12.
SAMPLES = {
    1: ("process", [(10.0, 1.0), (11.0, 2.0), (12.0, 2.5)]),
    2: ("process", [(11.0, 0.5), (12.0, 1.5)]),
    3: ("broker", [(10.0, 3.0), (12.0, 5.0)]),
}


def test_whole_run_totals_are_each_process_s_last_sample_summed_by_stage() -> None:
    assert _totals(SAMPLES) == {"broker": 5.0, "process": 4.0}


def test_a_window_takes_what_each_process_used_within_it_linearly_between_samples() -> None:
    # 10.5 -> 11.5: process 1 from 1.5 to 2.25, process 2 from 0 (not yet sampled) to 1.0,
    # the broker from 3.5 to 4.5.
    assert _totals(SAMPLES, window=(10.5, 11.5)) == {"process": 1.75, "broker": 1.0}
    # Before any sample nothing was used; after the last, nothing more.
    assert _totals(SAMPLES, window=(0.0, 9.0)) == {"process": 0.0, "broker": 0.0}
    assert _totals(SAMPLES, window=(12.0, 99.0)) == {"process": 0.0, "broker": 0.0}


def test_stages_are_named_from_their_command_lines() -> None:
    def name(command: str) -> str:
        return _stage_name([word.encode() for word in command.split()])

    assert name("python -m mbo_cli.main run --replay f.dbn") == "mbo run"
    assert name("python -m mbo_cli.main api --with-sink --port 8000") == "api+sink"
    assert name("python -m mbo_cli.main api --port 8000") == "api"
    assert name("python -m mbo_cli.main process --worker-index 0") == "process"
    assert name("python -m mbo_cli.forkserver") == "fork server"
    assert name("/usr/bin/java -Xmx1g -cp libs/* kafka.Kafka server.properties") == "broker"
    assert name("/usr/bin/file -b /usr/bin/python3") == "file"
    assert _stage_name([]) == "?"


def test_cost_is_cpu_per_record_with_shares_and_outputs_per_record() -> None:
    figures = {"records": 2_000_000, "rows": {"bbo": 900_000, "book_snapshots": 100_000}}
    result = cost(figures, {"broker": 4.0, "process": 2.0}, {"mbo.records": 112_000_000})
    assert result == {
        "total_cpu_us_per_record": 3.0,
        "cpu_us_per_record": {"broker": 2.0, "process": 1.0},
        "share": {"broker": 0.667, "process": 0.333},
        "bbo_rows_per_record": 0.45,
        "snapshot_rows_per_record": 0.05,
        "topic_bytes_per_record": {"mbo.records": 56.0},
    }
