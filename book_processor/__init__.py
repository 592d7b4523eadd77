"""The book processor: a faust-streaming app that rebuilds books and emits BBO and snapshots."""
