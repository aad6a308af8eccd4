"""NewestWins: the one drop-the-oldest rule behind the collector's, the map's and SLAM's queues."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from showroom_ros.capture.newest_wins import NewestWins


@given(size=st.integers(-2, 6), ops=st.lists(st.one_of(st.integers(0, 1000), st.none()), max_size=60))
def test_the_newest_always_gets_in_and_what_gave_way_is_the_oldest_counted(size: int, ops: list[int | None]) -> None:
    queue: NewestWins[int] = NewestWins(size)
    model: list[int] = []
    dropped = 0
    for op in ops:
        if op is None:  # a consumer takes one
            if model:
                assert queue.pop() == model.pop(0)
            continue
        gave_way = queue.put(op)
        if len(model) >= max(1, size):
            assert gave_way == model.pop(0)
            dropped += 1
        else:
            assert gave_way is None
        model.append(op)
        assert list(queue)[-1] == op and len(queue) <= max(1, size)
    assert list(queue) == model and queue.dropped == dropped
    assert queue.drain() == model and len(queue) == 0
