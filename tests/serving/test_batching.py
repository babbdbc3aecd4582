"""The request batcher: each caller gets its own rows back, overlapping callers share calls, errors reach them."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from facescale.serving.batching import Batcher


def _slow_double(sizes: list[int]):
    def fn(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes.append(len(x))
        time.sleep(0.05)  # a model call: requests arriving meanwhile wait for the next one
        return x * 2, x.sum(axis=1)
    return fn


def test_every_caller_gets_its_own_rows_and_overlapping_callers_share_calls() -> None:
    sizes: list[int] = []
    batcher = Batcher(_slow_double(sizes), max_batch=32)
    inputs = [np.full((1 + i % 3, 4), i, np.float32) for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        outputs = list(pool.map(batcher, inputs))
    for x, (doubled, sums) in zip(inputs, outputs, strict=True):
        assert np.array_equal(doubled, x * 2) and np.array_equal(sums, x.sum(axis=1))
    assert sum(sizes) == sum(len(x) for x in inputs)
    assert batcher.calls == len(sizes) < len(inputs)  # batched
    assert max(sizes) <= 32


def test_a_lone_caller_runs_alone_and_max_batch_is_kept() -> None:
    sizes: list[int] = []
    batcher = Batcher(_slow_double(sizes), max_batch=4)
    batcher(np.ones((2, 3)))
    assert sizes == [2]  # ran at once, alone
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(batcher, [np.ones((3, 3))] * 8))
    assert all(size <= 4 for size in sizes[1:])  # two requests of 3 never share a call of 4
    big = batcher(np.ones((9, 3)))  # larger than max_batch: runs whole, alone
    assert big[0].shape == (9, 3)


def test_an_error_reaches_the_callers_of_that_batch_and_the_batcher_goes_on() -> None:
    fail = threading.Event()

    def fn(x: np.ndarray) -> tuple[np.ndarray]:
        if fail.is_set():
            raise RuntimeError("model broke")
        return (x + 1,)

    batcher = Batcher(fn)
    fail.set()
    with pytest.raises(RuntimeError, match="model broke"):
        batcher(np.zeros((1, 2)))
    fail.clear()
    assert np.array_equal(batcher(np.zeros((1, 2)))[0], np.ones((1, 2)))
