"""Code shared by every stage of mbo-pipeline, by role: the pure book engine and formats, Kafka,
storage, settings and observability (docs/architecture.md)."""
