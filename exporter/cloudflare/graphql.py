"""How a GraphQL Analytics answer is judged. Its errors come with HTTP 200 (an ``errors`` list, ``data`` null
or partial), so the status alone says little: the words of the messages decide the ``api_errors_total`` reason,
and the message tells the operator what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_ERRORS_SHOWN = 3
QUOTA_PAUSE = 60.0  # "quota exceeded, please repeat your request in the next minute"
# Cloudflare's wording (developers.cloudflare.com/analytics/graphql-api/errors), lower-cased.
_AUTH_WORDS = ("not authorized", "authorization denied", "unauthorized", "does not have access")
_QUOTA_WORDS = ("quota exceeded", "rate limiter budget", "too many requests")
_UNAVAILABLE_WORDS = ("unable to execute query", "too many queries in progress", "please try again later")
PERMISSION_HINT = ("the API token cannot read this account's analytics: give it the Account Analytics Read "
                   "permission for the account (besides AI Gateway Read)")


@dataclass(frozen=True)
class Refusal:
    reason: str  # the api_errors_total reason
    message: str
    pause: float = 0.0  # seconds to hold back further GraphQL queries


def _messages(body: Any) -> tuple[list[str], list[str]]:
    """The error messages (cut short) and codes (``extensions.code``) of an answer."""
    errors = body.get("errors") if isinstance(body, dict) else None
    messages: list[str] = []
    codes: list[str] = []
    for err in errors if isinstance(errors, list) else []:
        if isinstance(err, dict):
            messages.append(str(err.get("message", ""))[:200])
            extensions = err.get("extensions")
            if isinstance(extensions, dict) and isinstance(extensions.get("code"), str):
                codes.append(extensions["code"][:40])
    return messages, codes


def judge(status: int, body: Any) -> dict[str, Any] | Refusal:
    """The answer's ``data`` object, or why it cannot be used."""
    messages, codes = _messages(body)
    shown = "; ".join(messages[:MAX_ERRORS_SHOWN]) or "no error message"
    if len(messages) > MAX_ERRORS_SHOWN:
        shown += f"; and {len(messages) - MAX_ERRORS_SHOWN} more"
    words = " ".join(messages).lower()
    if status == 429 or any(w in words for w in _QUOTA_WORDS):
        return Refusal("rate_limited", f"HTTP {status}: the GraphQL quota is used up: {shown}", QUOTA_PAUSE)
    if status >= 500 or any(w in words for w in _UNAVAILABLE_WORDS):
        return Refusal("server_error", f"HTTP {status} from the GraphQL API: {shown}")
    if status in (401, 403) or "authz" in codes or any(w in words for w in _AUTH_WORDS):
        return Refusal("auth", f"HTTP {status}: {PERMISSION_HINT} (GraphQL: {shown})")
    if messages:
        return Refusal("api_error", f"HTTP {status}: the GraphQL API refused the query: {shown}")
    if not isinstance(body, dict):
        return Refusal("invalid_response", f"HTTP {status}: the GraphQL answer is not a JSON object")
    if status >= 400:
        return Refusal("api_error", f"HTTP {status} from the GraphQL API with no error message")
    data = body.get("data")
    if not isinstance(data, dict):
        return Refusal("invalid_response", f"HTTP {status}: the GraphQL answer has no data object")
    return data
