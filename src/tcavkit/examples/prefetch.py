"""Decode example sets one ahead of the model, and produce any stream of model inputs a
few items ahead.

While the model runs on one set, the next set of a known order is read and decoded in a
background thread (image decoding and tensor maths both release the GIL), so decoding
hides behind the model's passes instead of adding to them. :func:`in_background` does the
same for any iterator (concept discovery's segmentation and patch batches).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TypeVar

from tcavkit.examples.base import ExampleSet, Inputs
from tcavkit.options import Preprocessing

T = TypeVar("T")

_END = object()


class Prefetcher:
    """Loads example sets, decoding the set that follows in ``order`` in the background.

    Args:
        preprocessing: applied by every :meth:`ExampleSet.load`.
        order: the sets in the order they will be asked for. A set not in it is loaded
            on the spot. An error while decoding a set is raised when that set is asked for.
    """

    def __init__(self, preprocessing: Preprocessing, order: Sequence[ExampleSet] = ()) -> None:

        self._preprocessing = preprocessing
        self._order = list(order)
        self._position = {id(examples): i for i, examples in enumerate(self._order)}
        self._pending: dict[int, Future[Inputs]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tcavkit-decode")

    def load(self, examples: ExampleSet) -> Inputs:
        """The set's model inputs ``(n, ...)`` (see :meth:`ExampleSet.load`)."""
        future = self._pending.pop(id(examples), None)
        position = self._position.get(id(examples))
        if position is not None and position + 1 < len(self._order):
            following = self._order[position + 1]
            if id(following) not in self._pending:
                self._pending[id(following)] = self._pool.submit(
                    following.load, self._preprocessing
                )
        if future is None:
            return examples.load(self._preprocessing)
        return future.result()

    def close(self) -> None:
        """Stop: decodes not started are dropped, a running one is waited for."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def in_background(items: Iterable[T], ahead: int = 2) -> Iterator[T]:
    """The items of ``items`` in their order, each produced once, in one background thread
    up to ``ahead`` items before the consumer asks for them.

    An error raised while producing an item is raised here when that item is asked for
    (the same exception, its message unchanged). Closing the iterator early waits for the
    item being produced, drops the rest and closes ``items`` when it is a generator.
    """
    iterator = iter(items)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tcavkit-ahead")
    pending: deque[Future[object]] = deque(
        pool.submit(next, iterator, _END) for _ in range(max(1, ahead))
    )
    try:
        while True:
            item = pending.popleft().result()
            if item is _END:
                return
            pending.append(pool.submit(next, iterator, _END))
            yield item  # type: ignore[misc]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
