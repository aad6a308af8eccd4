"""The bounded queue every camera-rate consumer uses: when it is full, the oldest item gives way.

A camera does not wait for a slow consumer (the map's integration, SLAM tracking, a frame waiting for its
CameraInfo), so the newest frame must always get in; what gave way is counted (and returned) so that
the owner can say it. Not thread-safe on its own: its owner holds its lock around every call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class NewestWins(Generic[T]):
    """A FIFO of at most ``size`` items (at least 1); :meth:`put` on a full one drops the oldest."""

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self._items: deque[T] = deque()
        self.dropped = 0  # items that gave way since construction

    def put(self, item: T) -> T | None:
        """Append ``item``; the item that gave way for it, or None when there was room."""
        gave_way = None
        if len(self._items) >= self.size:
            gave_way = self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        return gave_way

    def pop(self) -> T:
        """The oldest item (IndexError when empty)."""
        return self._items.popleft()

    def drain(self) -> list[T]:
        """Every item, oldest first, leaving the queue empty."""
        items = list(self._items)
        self._items.clear()
        return items

    def remove(self, item: T) -> None:
        self._items.remove(item)

    def clear(self) -> None:
        """Empty it; what was waiting is not counted as dropped (it was cancelled, not overrun)."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items))  # a copy: the owner may remove while iterating
