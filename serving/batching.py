"""Batching concurrent requests: one model call for the faces of every request waiting at that moment.

On this CPU one Inception V3 call on 8 face crops costs half of 8 calls on one
(bench/bench_serve.py), so when requests overlap, running them together is cheaper. The
batcher is greedy: a single worker thread takes whatever is queued when it is free (up to
``max_batch`` faces) and runs it as one batch, so a lone request never waits for company,
while under load requests pile up during a model call and go through the next one together.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

log = logging.getLogger(__name__)

Outputs = tuple[np.ndarray, ...]


class Batcher:
    """Runs ``fn`` (a batch of inputs -> arrays with one row per input) on the inputs of many callers at once.

    Args:
        fn: the batched function; every output has the inputs' length first.
        max_batch: most inputs in one call (a caller with more still goes whole, alone).
    """

    def __init__(self, fn: Callable[[np.ndarray], Outputs], max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.fn = fn
        self.max_batch = max_batch
        self.calls = 0  # model calls made (for tests and logs)
        self._queue: queue.SimpleQueue[tuple[np.ndarray, Future[Outputs]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="facescale-batcher", daemon=True)
        self._thread.start()

    def __call__(self, inputs: np.ndarray) -> Outputs:
        """The outputs for ``inputs`` (blocks until their batch has run; re-raises its error)."""
        future: Future[Outputs] = Future()
        self._queue.put((inputs, future))
        return future.result()

    def _run(self) -> None:
        pending: list[tuple[np.ndarray, Future[Outputs]]] = []
        while True:
            if not pending:
                pending.append(self._queue.get())
            size = len(pending[0][0])
            while size < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                pending.append(item)
                size += len(item[0])
            take: list[tuple[np.ndarray, Future[Outputs]]] = []
            keep: list[tuple[np.ndarray, Future[Outputs]]] = []
            total = 0
            for item in pending:  # whole requests, up to max_batch (the first always goes)
                if not take or total + len(item[0]) <= self.max_batch:
                    take.append(item)
                    total += len(item[0])
                else:
                    keep.append(item)
            pending = keep
            try:
                outputs = self.fn(np.concatenate([inputs for inputs, _ in take]))
                self.calls += 1
            except BaseException as exc:  # the callers get the error; the worker lives on
                for _, future in take:
                    future.set_exception(exc)
                continue
            start = 0
            for inputs, future in take:
                end = start + len(inputs)
                future.set_result(tuple(np.asarray(out)[start:end] for out in outputs))
                start = end
