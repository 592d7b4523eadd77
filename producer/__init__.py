"""The producer: replays DBN MBO files into the Kafka records topic, keyed by instrument."""
