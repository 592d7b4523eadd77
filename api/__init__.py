"""The API gateway: latest books, history, live WebSocket feed and the UI (FastAPI)."""
