"""A deliberately simple order book, written straight from book-rules.md, to check the engine.

Dicts and lists, no cleverness: every operation scans. Slow and obviously right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mbo_core.book import F_LAST, F_MAYBE_BAD_BOOK, F_TOB, UNDEF_PRICE


@dataclass
class RefBook:
    # side -> price -> FIFO list of [order_id, size]
    sides: dict[str, dict[int, list[list[int]]]] = field(default_factory=lambda: {"B": {}, "A": {}})
    where: dict[int, tuple[str, int]] = field(default_factory=dict)  # order_id -> (side, price)
    quality: dict[str, int] = field(default_factory=dict)
    last: tuple[int, int, int] | None = None  # ts_event, ts_recv, sequence at the last F_LAST

    def count(self, name: str) -> None:
        self.quality[name] = self.quality.get(name, 0) + 1

    def levels(self, side: str) -> list[tuple[int, int, int]]:
        prices = sorted(self.sides[side], reverse=side == "B")
        return [
            (p, sum(s for _, s in self.sides[side][p]), len(self.sides[side][p])) for p in prices
        ]

    def _remove(self, order_id: int) -> list[int]:
        side, price = self.where.pop(order_id)
        queue = self.sides[side][price]
        entry = next(e for e in queue if e[0] == order_id)
        queue.remove(entry)
        if not queue:
            del self.sides[side][price]
        return entry

    def _append(self, side: str, price: int, order_id: int, size: int) -> None:
        self.sides[side].setdefault(price, []).append([order_id, size])
        self.where[order_id] = (side, price)

    def apply(
        self, action: str, side: str, price: int, size: int, order_id: int, flags: int
    ) -> None:
        if flags & F_MAYBE_BAD_BOOK:
            self.count("maybe_bad_book")
        if action in "TFN":
            return
        if action == "R":
            self.sides = {"B": {}, "A": {}}
            self.where = {}
            return
        if side not in ("B", "A") or action not in "ACM":
            self.count("invalid_record")
            return
        if action == "A" and flags & F_TOB:
            for oid in [o for o, (s, _) in self.where.items() if s == side]:
                del self.where[oid]
            self.sides[side] = {}
            if price != UNDEF_PRICE:
                self.sides[side][price] = [[-1, size]]  # a level, not an order
            return
        if action == "A":
            if order_id in self.where:
                self.count("add_existing_order")
                self._remove(order_id)
            self._append(side, price, order_id, size)
        elif action == "C":
            if order_id not in self.where:
                self.count("cancel_unknown_order")
                return
            o_side, o_price = self.where[order_id]
            entry = next(e for e in self.sides[o_side][o_price] if e[0] == order_id)
            if size > entry[1]:
                self.count("cancel_exceeds_size")
                size = entry[1]
            entry[1] -= size
            if entry[1] == 0:
                self._remove(order_id)
        else:  # M
            if order_id not in self.where:
                self.count("modify_unknown_order")
                self._append(side, price, order_id, size)
                return
            o_side, o_price = self.where[order_id]
            entry = next(e for e in self.sides[o_side][o_price] if e[0] == order_id)
            if o_side != side:
                self.count("modify_changed_side")
            if o_side != side or o_price != price or size > entry[1]:
                self._remove(order_id)
                self._append(side, price, order_id, size)
            else:
                entry[1] = size

    def close(self, flags: int, ts_event: int, ts_recv: int, sequence: int) -> bool:
        if flags & F_LAST:
            self.last = (ts_event, ts_recv, sequence)
            return True
        return False
