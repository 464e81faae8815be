"""Dynamic micro-batching for dltrain-serve, as TorchServe (batch_size, max_batch_delay) and Ray Serve
(max_batch_size, batch_wait_timeout_s) do it: the rows of concurrent requests are gathered into one forward
pass, run in one thread of its own, so eight one-row requests cost one call of the model rather than eight
thread hops and eight calls contending for the GIL.

A request waits at most `max_wait_s` from its arrival for others to join it (less once `max_rows` rows are
waiting), plus the forward pass running ahead of it; a request is never split, and one larger than max_rows
is a pass of its own. Each request gets exactly its own rows' results back, so a fault in one request's rows
(found before it joins) touches no other request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class MicroBatcher:
    """`await batcher(rows)`: `run(rows)` of these rows, computed in one call with other waiting requests'."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_rows: int, max_wait_s: float) -> None:
        self.run, self.max_rows, self.max_wait_s = run, max_rows, max_wait_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[np.ndarray, asyncio.Future, float]] = []
        self._full: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="dltrain-forward")

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a test client's): nothing of the last one's carries over
            self._loop, self._waiting, self._full, self._task = loop, [], asyncio.Event(), None
        future = loop.create_future()
        self._waiting.append((rows, future, loop.time()))
        if sum(len(waiting) for waiting, _, _ in self._waiting) >= self.max_rows:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve())
        return await future

    async def _serve(self) -> None:
        """Forward passes while requests wait: each one once its oldest request has waited max_wait_s or
        max_rows rows are waiting."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            left = self._waiting[0][2] + self.max_wait_s - loop.time()
            if left > 0 and not self._full.is_set():
                try:
                    await asyncio.wait_for(self._full.wait(), left)
                except TimeoutError:
                    pass
            batch = self._take()
            try:
                results = await loop.run_in_executor(self._thread, self.run,
                                                     np.concatenate([rows for rows, _ in batch]))
            except Exception as exc:  # noqa: BLE001 - a bug in the forward pass: each request answers it (a 500)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for rows, future in batch:
                if not future.done():  # done: its client went away
                    future.set_result(results[start:start + len(rows)])
                start += len(rows)

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The oldest waiting requests up to max_rows rows (at least one request)."""
        taken, count = 0, 0
        while taken < len(self._waiting) and (taken == 0 or count + len(self._waiting[taken][0]) <= self.max_rows):
            count += len(self._waiting[taken][0])
            taken += 1
        batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
        if sum(len(rows) for rows, _, _ in self._waiting) < self.max_rows:
            self._full.clear()
        return [(rows, future) for rows, future, _ in batch]
