"""Read ahead: the items of an iterator produced by a background thread while the caller works on the
previous ones. Worth it where producing an item mostly runs outside the interpreter lock (pyarrow's
Parquet and CSV decoding, file reads, decompression), so that on two cores reading and processing
overlap instead of taking turns."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterable[T], depth: int = 2, name: str = "shardgraph-read-ahead") -> Iterator[T]:
    """Yield the items of `items` in order, with up to `depth` of them produced ahead by a thread.
    An exception raised while producing an item is raised here, in the caller's thread, where that
    item would have been yielded; if the caller stops early, the thread stops at its next item."""
    if depth < 1:
        yield from items
        return
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # handed to the caller's thread, raised there
            put(_Failed(error))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
