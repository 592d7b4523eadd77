"""The order-book engine (pure, no I/O): see `engine.BookEngine`."""

from mbo_core.book.engine import (
    F_LAST,
    F_MAYBE_BAD_BOOK,
    F_SNAPSHOT,
    F_TOB,
    UNDEF_PRICE,
    BookEngine,
    BookKey,
    BookNotObservableError,
    BookView,
    RestingOrder,
)
from mbo_core.quality import QUALITY_FIELDS

__all__ = [
    "F_LAST",
    "F_MAYBE_BAD_BOOK",
    "F_SNAPSHOT",
    "F_TOB",
    "QUALITY_FIELDS",
    "UNDEF_PRICE",
    "BookEngine",
    "BookKey",
    "BookNotObservableError",
    "BookView",
    "RestingOrder",
]
