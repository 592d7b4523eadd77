"""Kafka: the clients every stage builds from the settings (clients), the pipeline's topics
(topics) and the local Apache Kafka broker that `mbo run`, `mbo infra` and the tests start
(broker), and client-less probes of a port (probes)."""
