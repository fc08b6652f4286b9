"""A queue that serves owners in turn: one owner's backlog never holds the others back.

Pure (STYLE §2): no I/O, no clock.  ``FairQueue[T]`` keeps one FIFO per owner and
hands out items *least recently served owner first*:

``push(owner, item)``   queue ``item`` behind the owner's earlier items.
``pop()``               ``(owner, item)`` of the owner served longest ago (an owner
                        never served, or forgotten, counts as oldest; ties go to the
                        owner whose queue became non-empty first), or ``None``.
``remove(owner, item)`` take a queued item out (cancellation); ``True`` if it was there.
``len(queue)``          the number of queued items.

Guarantees (tested, including by a hypothesis property in ``tests/mi/test_fairqueue``):

1. every pushed item is popped exactly once, unless removed first;
2. each owner's items are popped in the order they were pushed;
3. fairness: from any moment at which owner ``X`` has a queued item until ``X`` is
   next served, every other owner is served **at most once**.  So ``X`` waits for at
   most one item of each other owner, however many items (retries) they have queued.

Because the order is "least recently served", an owner that was just served goes
behind one that arrives afterwards: owner A's first item is sent at once, A queues 9
more, B queues 1: B is served second, then A's remaining items.

Memory: the service stamp of an owner whose queue is empty is kept so that it stays
behind the others; stamps are forgotten (oldest first) once more than
``memory`` idle owners are remembered, and only when forgetting them cannot break
guarantee 3 (their stamp is older than every queued owner's).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")

_NEVER = -1  # the service stamp of an owner never served (or forgotten)


class FairQueue(Generic[T]):
    """Per-owner FIFO queues, served least recently served owner first."""

    def __init__(self, *, memory: int = 1024) -> None:
        if memory < 0:
            raise ValueError(f"memory must be >= 0: {memory!r}")
        self._memory = memory
        self._queues: dict[str, deque[T]] = {}  # owners with queued items only
        # One live heap entry per owner in _queues: (key, seq, owner).  Entries of
        # owners emptied by remove() stay in the heap, stale, until popped or compacted.
        self._heap: list[tuple[int, int, str]] = []
        self._entry: dict[str, tuple[int, int, str]] = {}
        self._stamps: dict[str, int] = {}  # last service stamp; insertion order = age
        self._seq = itertools.count()
        self._clock = itertools.count()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"<FairQueue {self._len} items, {len(self._queues)} owners>"

    def push(self, owner: str, item: T) -> None:
        queue = self._queues.get(owner)
        if queue is None:
            queue = self._queues[owner] = deque()
            self._enter(owner, self._stamps.get(owner, _NEVER))
        queue.append(item)
        self._len += 1

    def pop(self) -> tuple[str, T] | None:
        while self._heap:
            entry = heapq.heappop(self._heap)
            owner = entry[2]
            if self._entry.get(owner) is not entry:
                continue  # stale: the owner's queue was emptied by remove()
            queue = self._queues[owner]
            item = queue.popleft()
            self._len -= 1
            stamp = next(self._clock)
            self._stamps.pop(owner, None)
            self._stamps[owner] = stamp  # re-insert: the dict stays in stamp order
            if queue:
                self._enter(owner, stamp)
            else:
                del self._queues[owner], self._entry[owner]
            self._forget()
            return owner, item
        return None

    def remove(self, owner: str, item: T) -> bool:
        queue = self._queues.get(owner)
        if queue is None:
            return False
        for index, queued in enumerate(queue):
            if queued is item or queued == item:
                del queue[index]
                break
        else:
            return False
        self._len -= 1
        if not queue:
            del self._queues[owner], self._entry[owner]
            if len(self._heap) > 2 * len(self._entry) + 16:
                self._heap = list(self._entry.values())
                heapq.heapify(self._heap)
        return True

    # ------------------------------------------------------------------ internals

    def _enter(self, owner: str, key: int) -> None:
        entry = (key, next(self._seq), owner)
        self._entry[owner] = entry
        heapq.heappush(self._heap, entry)

    def _forget(self) -> None:
        excess = len(self._stamps) - len(self._queues) - self._memory
        if excess <= 0:
            return
        oldest_queued = min((entry[0] for entry in self._entry.values()), default=None)
        for owner, stamp in list(self._stamps.items()):
            if excess <= 0 or (oldest_queued is not None and stamp >= oldest_queued):
                break
            if owner not in self._queues:
                del self._stamps[owner]
                excess -= 1
