"""Sets decode one ahead of the model, in order, each exactly once; any stream of inputs is
produced a few items ahead in one background thread."""

import threading

import pytest
import torch

from tcavkit.errors import DataError
from tcavkit.examples.base import ExampleSet
from tcavkit.examples.prefetch import Prefetcher, in_background
from tcavkit.options import Preprocessing


class Recorded(ExampleSet):
    """A set whose load records the calling thread; ``fail`` makes it raise."""

    def __init__(self, name: str, log: list, fail: bool = False) -> None:
        self.name, self.fingerprint, self.description = name, name, name
        self.log, self.fail = log, fail
        self.started = threading.Event()

    def load(self, preprocessing: Preprocessing) -> torch.Tensor:
        self.started.set()
        self.log.append((self.name, threading.current_thread() is threading.main_thread()))
        if self.fail:
            raise DataError(f"example set '{self.name}' is broken")
        return torch.full((2, 1), float(ord(self.name)))


def test_each_set_loads_once_and_the_next_one_in_the_background():
    log: list = []
    a, b, c = (Recorded(n, log) for n in "abc")
    with Prefetcher(Preprocessing(), [a, b, c]) as loads:
        assert float(loads.load(a)[0, 0]) == ord("a")
        assert b.started.wait(5)  # asked for a: b is on its way
        assert float(loads.load(b)[0, 0]) == ord("b")
        assert float(loads.load(c)[0, 0]) == ord("c")
    assert sorted(log) == [("a", True), ("b", False), ("c", False)]


def test_a_set_outside_the_order_loads_on_the_spot():
    log: list = []
    a, other = Recorded("a", log), Recorded("x", log)
    with Prefetcher(Preprocessing(), [a]) as loads:
        loads.load(other)
        loads.load(a)
    assert log == [("x", True), ("a", True)]


def test_a_decoding_error_is_raised_when_that_set_is_asked_for():
    log: list = []
    a, bad = Recorded("a", log), Recorded("b", log, fail=True)
    with Prefetcher(Preprocessing(), [a, bad]) as loads:
        loads.load(a)  # b fails in the background, unseen so far
        assert bad.started.wait(5)
        with pytest.raises(DataError, match="'b' is broken"):
            loads.load(bad)


def _produced(log: list, count: int, fail_at: int | None = None):
    """Yields 0..count-1, recording each item and whether it was made in the main thread."""
    try:
        for i in range(count):
            log.append((i, threading.current_thread() is threading.main_thread()))
            if i == fail_at:
                raise DataError(f"image {i} cannot be segmented")
            yield i
    finally:
        log.append("closed")


def test_in_background_gives_every_item_in_order_made_in_one_other_thread():
    log: list = []
    assert list(in_background(_produced(log, 5), ahead=2)) == [0, 1, 2, 3, 4]
    assert log == [(i, False) for i in range(5)] + ["closed"]


def test_in_background_raises_the_producers_error_at_its_item():
    log: list = []
    got = []
    with pytest.raises(DataError, match=r"^image 2 cannot be segmented$"):
        for item in in_background(_produced(log, 5, fail_at=2)):
            got.append(item)
    assert got == [0, 1]
    assert [entry for entry in log if entry != "closed"] == [(0, False), (1, False), (2, False)]


def test_in_background_closed_early_stops_producing_and_closes_the_producer():
    log: list = []
    stream = in_background(_produced(log, 100), ahead=2)
    assert next(stream) == 0
    stream.close()
    made = [entry for entry in log if entry != "closed"]
    assert len(made) <= 3  # the item handed over and at most two ahead of it
    assert log[-1] == "closed"
