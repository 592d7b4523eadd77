"""The sink: loads BBO, snapshot and raw MBO events from Kafka into ClickHouse, idempotently."""
