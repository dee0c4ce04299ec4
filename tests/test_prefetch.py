"""Sets decode one ahead of the model, in order, each exactly once."""

import threading

import pytest
import torch

from tcavkit.errors import DataError
from tcavkit.examples.base import ExampleSet
from tcavkit.examples.prefetch import Prefetcher
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
