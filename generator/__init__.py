"""Synthetic market generator: realistic multi-instrument MBO streams as genuine DBN files,
with the true final books they must rebuild to (docs/generator.md).

Entry points (import them from their modules; this package stays light to import):

* `generator.api.generate_file(path, config, depth=10, expect=None, on_progress=None)`
  -> `GenerationResult` (records, events, bytes, seconds, final books as `mbo book -o` JSON);
* `generator.api.generate_records(config)` -> iterator of MBO_DTYPE chunks (in memory);
* `generator.core.GeneratorConfig(instruments, records, publishers, seed, start_ns, dataset,
  flow)` and `generator.flow.FlowParams` (the order-flow model's knobs).

Modules: flow (model and calibration), matching (the true books), events (the compiled event
loop), core (instruments, windows, merge, sequences), dbn_writer, expect, api.
"""

from generator.numba_cache import drop_if_stale

# Before any compiled function is loaded: a cache built from other sources must go.
drop_if_stale()
