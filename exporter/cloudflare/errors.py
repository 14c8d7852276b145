"""What a request or a poll can end in besides an answer."""

from __future__ import annotations

from collections import Counter
from typing import Protocol


class ApiError(Exception):
    """A failed request or poll; ``reason`` is the ``api_errors_total`` label, the message is ``str()``."""

    def __init__(self, reason: str, message: str, retryable: bool = False, retry_after: float | None = None,
                 status: int | None = None, codes: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.codes = codes


class NotEnrolled(Exception):
    """The API says the account does not use this endpoint's feature (HTTP 404, or 403 / success:false
    without an authentication or rate-limit code). Not an ApiError: the poll is not a failure."""


class Recorder(Protocol):
    """Where a request's outcome is counted (``PollCounts``)."""

    def record(self, code: str, reason: str | None) -> None:
        """Once per HTTP attempt: the HTTP status as str, or "error" when no response came; the
        api_errors_total reason when that attempt failed, else None."""

    def pause(self, header: str) -> None:
        """The API asked to pause requests (``header`` names how: retry-after, ratelimit ...)."""

    def fail(self, reason: str, message: str) -> ApiError:
        """Count a failure that is not an HTTP attempt's (a bad page, a bound reached) and return its error."""


class PollCounts:
    """One poll's request, error and pause counts, written to the store once when the poll ends."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.pauses: Counter[str] = Counter()

    def record(self, code: str, reason: str | None) -> None:
        self.requests[code] += 1
        if reason is not None:
            self.errors[reason] += 1

    def pause(self, header: str) -> None:
        self.pauses[header] += 1

    def fail(self, reason: str, message: str) -> ApiError:
        """Count a failure that is not an HTTP attempt's (a bad page, a bound reached) and return its error."""
        self.errors[reason] += 1
        return ApiError(reason, message)
