"""The API's routes, one router per surface: books (the live latest book and BBO), history
(ClickHouse), live (SSE and WebSocket feeds), replay_control (starting and stopping
replays) and health (probes and
Prometheus metrics). api.app.create_app assembles them."""
