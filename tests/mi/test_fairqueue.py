"""mi.fairqueue: exactly-once, per-owner order and the fairness bound (module doc)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xcapdiff_ext.mi.fairqueue import FairQueue


def drain(queue: FairQueue[str]) -> list[tuple[str, str]]:
    out = []
    while (popped := queue.pop()) is not None:
        out.append(popped)
    return out


def test_empty() -> None:
    queue: FairQueue[str] = FairQueue()
    assert len(queue) == 0
    assert queue.pop() is None
    assert not queue.remove("a", "x")


def test_one_owner_is_fifo() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(5):
        queue.push("a", f"a{i}")
    assert len(queue) == 5
    assert drain(queue) == [("a", f"a{i}") for i in range(5)]
    assert len(queue) == 0


def test_round_robin_across_owners() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(3):
        queue.push("a", f"a{i}")
    queue.push("b", "b0")
    queue.push("c", "c0")
    queue.push("c", "c1")
    assert [item for _, item in drain(queue)] == ["a0", "b0", "c0", "a1", "c1", "a2"]


def test_just_served_owner_goes_behind_a_newcomer() -> None:
    # A's first call is sent at once (queue empty); A then queues 9 more, B one.
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "a0")
    assert queue.pop() == ("a", "a0")
    for i in range(1, 10):
        queue.push("a", f"a{i}")
    queue.push("b", "b0")
    order = [item for _, item in drain(queue)]
    assert order == ["b0"] + [f"a{i}" for i in range(1, 10)]


def test_least_recently_served_first() -> None:
    queue: FairQueue[str] = FairQueue()
    for owner in "abc":
        queue.push(owner, owner + "0")
    assert [o for o, _ in drain(queue)] == ["a", "b", "c"]
    for owner in "cba":  # pushed in reverse, served by age of last service
        queue.push(owner, owner + "1")
    assert [o for o, _ in drain(queue)] == ["a", "b", "c"]


def test_remove() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "a0")
    queue.push("a", "a1")
    queue.push("b", "b0")
    assert queue.remove("a", "a0")
    assert not queue.remove("a", "a0")
    assert not queue.remove("b", "a1")
    assert queue.remove("b", "b0")  # b's queue empties; its heap entry goes stale
    assert len(queue) == 1
    queue.push("b", "b1")
    assert drain(queue) == [("a", "a1"), ("b", "b1")]


def test_remove_uses_identity_first() -> None:
    @dataclass(eq=False)
    class Call:
        name: str

    queue: FairQueue[Call] = FairQueue()
    first, second = Call("x"), Call("x")
    queue.push("a", first)
    queue.push("a", second)
    assert queue.remove("a", second)
    assert queue.pop() == ("a", first)


def test_memory_is_bounded() -> None:
    queue: FairQueue[int] = FairQueue(memory=10)
    for i in range(1000):
        queue.push(f"owner{i}", i)
        assert queue.pop() == (f"owner{i}", i)
    assert len(queue._stamps) <= 10


def test_many_remove_cycles_compact_the_heap() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.push("keep", -1)
    for i in range(1000):
        queue.push("x", i)
        assert queue.remove("x", i)
    assert len(queue._heap) <= 2 * 1 + 16 + 1
    assert drain(queue) == [("keep", -1)]


def test_negative_memory_refused() -> None:
    with pytest.raises(ValueError):
        FairQueue(memory=-1)


# --------------------------------------------------------------------- property

OWNERS = ["a", "b", "c", "d"]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from(OWNERS), st.integers(1, 4)),
        st.tuples(st.just("pop"), st.just(""), st.integers(1, 3)),
        st.tuples(st.just("remove"), st.sampled_from(OWNERS), st.integers(0, 5)),
    ),
    max_size=60,
)


@dataclass
class Model:
    """What the queue must hold, and who was served since each owner's wait began."""

    queued: dict[str, list[int]] = field(default_factory=dict)
    pushed: dict[str, list[int]] = field(default_factory=dict)
    popped: dict[str, list[int]] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    # For each owner with queued items: the owners served since it last had to wait
    # from scratch (became non-empty, or was served).  Guarantee 3: never twice.
    served_since: dict[str, set[str]] = field(default_factory=dict)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(0, 3))
def test_property_exactly_once_order_and_fairness(
    operations: list[tuple[str, str, int]], memory: int
) -> None:
    queue: FairQueue[int] = FairQueue(memory=memory)
    model = Model()
    counter = 0

    def served(owner: str, item: int) -> None:
        expected = model.queued[owner].pop(0)
        assert item == expected, "per-owner order"
        model.popped.setdefault(owner, []).append(item)
        for waiting, seen in model.served_since.items():
            if waiting != owner:
                assert owner not in seen, f"{owner} served twice while {waiting} waited"
                seen.add(owner)
        model.served_since[owner] = set()
        if not model.queued[owner]:
            del model.queued[owner], model.served_since[owner]

    for op, owner, n in operations:
        if op == "push":
            for _ in range(n):
                counter += 1
                if owner not in model.queued:
                    model.queued[owner] = []
                    model.served_since[owner] = set()
                model.queued[owner].append(counter)
                model.pushed.setdefault(owner, []).append(counter)
                queue.push(owner, counter)
        elif op == "pop":
            for _ in range(n):
                popped = queue.pop()
                if popped is None:
                    assert not model.queued
                    break
                served(*popped)
        else:
            items = model.queued.get(owner, [])
            if n < len(items):
                item = items.pop(n)
                assert queue.remove(owner, item)
                model.removed.add(item)
                if not items:
                    del model.queued[owner], model.served_since[owner]
            else:
                assert not queue.remove(owner, -5)
        assert len(queue) == sum(len(v) for v in model.queued.values())

    while (popped := queue.pop()) is not None:
        served(*popped)
    assert not model.queued
    for owner, items in model.pushed.items():
        # exactly once: what was pushed is what was popped plus what was removed
        kept = [i for i in items if i not in model.removed]
        assert model.popped.get(owner, []) == kept
