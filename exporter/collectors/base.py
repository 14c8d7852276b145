"""What a collector is: one module per Cloudflare endpoint, one line in the registry (``__init__.py``).

A collector class declares everything about its endpoint: its ``name`` (the config section
``collectors.<name>`` and the ``endpoint`` label), its settings class (keys, defaults, bounds), its request(s)
(``fetch``, through ``AccountApi``) into immutable data, its metric families and their samples (``render``),
what it adds to the status page (``status``), and its sample answers for ``--demo`` and the test fake
(``sample`` and ``routes``). The config loader, the poller, the renderer, the status page and the demo derive
everything else from the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from exporter.cloudflare.account import AccountApi
from exporter.cloudflare.errors import NotEnrolled
from exporter.collectors._wire import Malformed
from exporter.collectors.cells import StatusCell
from exporter.config.model import CollectorSettings, Config

NS = "cloudflare_ai_gateway"
ACC = ("account_id", "account")
Acc = tuple[str, str]  # (account_id, account) label values
SettingsT = TypeVar("SettingsT", bound=CollectorSettings)
DataT = TypeVar("DataT")


@dataclass(frozen=True)
class Family:
    name: str  # full, with the prefix
    doc: str
    labels: tuple[str, ...]
    type: str = "gauge"


class Sink(Protocol):
    def add(self, family: Family, labels: Sequence[str], value: float) -> None: ...


@dataclass(frozen=True)
class Fetched:
    data: Any
    skipped: int = 0  # malformed items left out (api_invalid_invoices_total)
    enrolled: bool = True  # False: the account does not use this feature; NOT a failed poll
    summary: Mapping[str, Any] = field(default_factory=dict)  # for the poll's log line
    warning: str | None = None  # what the poll left out or could not do, for a warn-level log line


@dataclass(frozen=True)
class SampleRequest:
    """A request to a sample account (``--demo``, the test fake), as a route's answer sees it."""

    account_id: str
    query: Mapping[str, str]
    body: bytes
    now: float
    started: float  # when the demo began (time passes for some samples)
    sample: Callable[[str], Any]  # the account's sample of the route's collector, by account id (None: unknown)


Reply = tuple[int, Any]  # (HTTP status, JSON body)


@dataclass(frozen=True)
class Route:
    """One path a collector's sample answers: under ``/accounts/{id}/ai-gateway/``, or absolute from ``/``."""

    endpoint: str  # how the test fake names it (fault injection, recorded requests)
    path: str
    answer: Callable[[Any, SampleRequest], Reply]  # (the account's sample, the request)
    method: str = "GET"


class Collector(Generic[SettingsT, DataT]):
    name: ClassVar[str]
    title: ClassVar[str]  # the endpoint in words, on the status page ("credit balance")
    settings_type: ClassVar[type[CollectorSettings]] = CollectorSettings
    columns: ClassVar[tuple[str, ...]] = ()  # the status-page columns ``status`` fills, in order
    routes: ClassVar[tuple[Route, ...]] = ()
    demo_interval: ClassVar[float] = 30.0  # poll interval under --demo: movement within minutes
    graphql_per_poll: ClassVar[int] = 0  # GraphQL queries one poll of one account makes
    families: tuple[Family, ...] = ()  # in exposition order

    def __init__(self, settings: SettingsT, config: Config) -> None:
        self.settings = settings

    def requests_per_poll(self) -> float:
        """REST requests one poll of one account makes (on average), for the budget check."""
        return 1

    async def fetch(self, api: AccountApi, previous: DataT | None) -> Fetched:
        """The endpoint's data for one account (``previous``: the last good data, None after a start).
        Raise ApiError (through ``api``), Malformed for an answer that cannot be used, NotEnrolled."""
        raise NotImplementedError

    def render(self, acc: Acc, data: DataT, out: Sink) -> None:
        raise NotImplementedError

    def status(self, data: DataT, now: float) -> tuple[StatusCell, ...]:
        """One cell per column in ``columns``, for an account with data (``now``: Unix time)."""
        return ()

    @staticmethod
    def sample(account: str, now: float, started: float) -> Any:
        """A sample account's server-side state for this collector's routes (``account`` is its name)."""
        return None


async def fetch(collector: Collector[Any, Any], api: AccountApi, previous: Any) -> Fetched:
    """A poll's fetch: an account the API says does not use the feature is a successful poll without data;
    an answer that cannot be used is counted through ``api`` and fails the poll."""
    try:
        return await collector.fetch(api, previous)
    except NotEnrolled:
        return Fetched(data=None, enrolled=False)
    except Malformed as err:
        raise api.fail(err.reason, str(err)) from None


def money(value: float, divisor: float) -> float:
    """An amount in API units as major units: 862296 / 100 is 8622.96, not 8622.960000000001."""
    return round(value / divisor, 10)
