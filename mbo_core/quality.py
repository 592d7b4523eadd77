"""The data-quality counters every book keeps, by name, in the order the kernel, the wire and the
ClickHouse columns share (append only: a new counter goes last and bumps the wire version)."""

from __future__ import annotations

QUALITY_FIELDS: tuple[str, ...] = (
    "cancel_unknown_order",
    "modify_unknown_order",
    "cancel_exceeds_size",
    "maybe_bad_book",
    "add_existing_order",
    "modify_changed_side",
    "invalid_record",
    "unterminated_event_records",
)
