"""A bounded pool of handler threads: started as requests need them, at most MAX_HANDLER_THREADS."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from exporter.web import limits

Job = TypeVar("Job")


class HandlerPool(Generic[Job]):
    """Threads that call ``work`` on each job put in line. Daemon threads: a stuck client never delays exit."""

    def __init__(self, name: str, work: Callable[[Job], None]) -> None:
        self._name = name
        self._work = work
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._busy = 0  # jobs in line or in a thread

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    def put(self, job: Job) -> None:
        with self._lock:
            self._busy += 1
            more = self._busy > len(self._threads) and len(self._threads) < limits.MAX_HANDLER_THREADS
        if more:
            thread = threading.Thread(target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._jobs.put(job)

    def queued(self) -> bool:
        """True if a job waits in line for a thread."""
        return not self._jobs.empty()

    def done(self) -> None:
        """``work`` is through with its job; ``busy`` counts it no longer (call it before handing the job on)."""
        with self._lock:
            self._busy -= 1

    def stop(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._work(job)
