"""What the app gives the HTTP side: a route table of handlers that answer with a ``Response``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Protocol

from exporter.webconfig import WebConfig


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes | tuple[bytes | memoryview, ...]  # bytes, or chunks written one after another
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


RouteHandler = Callable[[Message], Response]  # gets the request headers


class WebApp(Protocol):
    """The route table (path -> method -> handler) and the web config (TLS, basic auth), read per request."""

    routes: Mapping[str, Mapping[str, RouteHandler]]

    def web_config(self) -> WebConfig: ...
