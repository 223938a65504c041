"""A draw's steps as an iterator: the draw runs in a worker thread and hands each step over as it happens;
closing the iterator stops the draw at its next step."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Generator

from rediffuse.samplers.request import OnStep, Step

POLL_S = 0.05  # how often a waiting worker looks whether the reader has gone


class Stopped(Exception):
    """Raised inside a draw whose reader closed the stream."""


def stream(draw: Callable[[OnStep], Any]) -> Generator[Step, None, Any]:
    """Each step `draw(on_step)` reports, as it happens (the draw waits for the reader: one step in flight);
    the generator's return value is what draw returned. Closing it early stops the draw at its next step."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def give(item: tuple[str, Any], stoppable: bool) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        if stoppable:
            raise Stopped()
        return False

    def work() -> None:
        try:
            item: tuple[str, Any] = ("done", draw(lambda step: give(("step", step), True)))
        except Stopped:
            return
        except BaseException as err:  # handed to the reader, raised there
            item = ("error", err)
        give(item, False)

    worker = threading.Thread(target=work, name="rediffuse-draw", daemon=True)
    worker.start()
    try:
        while True:
            what, value = handoff.get()
            if what == "step":
                yield value
            elif what == "error":
                raise value
            else:
                return value
    finally:
        stop.set()
        worker.join()
