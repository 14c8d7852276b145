"""One account's view of the API, for one poll of one collector: requests under
``/accounts/{id}/ai-gateway/``, followed pages, and the poll's counts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.cloudflare.body import is_number
from exporter.cloudflare.client import MAX_ITEMS_PER_PAGE, CloudflareClient
from exporter.cloudflare.errors import ApiError, PollCounts
from exporter.config.model import AccountConfig

ACCOUNT_PATH = "/accounts/{id}/ai-gateway/"
MAX_ITEMS_PER_ACCOUNT = 10_000  # items over all pages of one poll of one account


@dataclass(frozen=True)
class Pages:
    """What a paginated read gave: the kept items, how many pages were read, and whether that is all of them."""

    items: list[Any]
    pages: int
    complete: bool = True


def _page_fingerprint(items: list[Any]) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


class AccountApi:
    """What a collector's ``fetch()`` gets: the client bound to one account and one poll's counts."""

    def __init__(self, client: CloudflareClient, account: AccountConfig, counts: PollCounts) -> None:
        self.account = account
        self.client = client
        self.counts = counts

    def fail(self, reason: str, message: str) -> ApiError:
        """Count ``reason`` in api_errors_total and return the error to raise."""
        return self.counts.fail(reason, message)

    async def get(self, path_suffix: str, params: dict[str, Any],
                  accept_not_enrolled: bool = False) -> dict[str, Any]:
        """GET ``/accounts/{id}/ai-gateway/<path_suffix>``; with ``accept_not_enrolled`` an answer saying the
        account does not use the feature raises NotEnrolled instead of ApiError."""
        path = ACCOUNT_PATH.format(id=self.account.id) + path_suffix
        return await self.client.get(path, params, self.account.credentials, self.counts, accept_not_enrolled)

    async def graphql(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        """The ``data`` of one GraphQL query with this account's credentials (``$accountTag`` is its id)."""
        return await self.client.graphql(document, {"accountTag": self.account.id, **variables},
                                         self.account.credentials, self.counts)

    async def get_pages(self, path_suffix: str, params: dict[str, Any], items_key: str | None,
                        parse: Callable[[Any], Any] | None = None) -> Pages:
        """Every page's ``result[items_key]`` items (``result`` itself when None), following ``page`` while
        the answer says there is more.
        Guards: at most cloudflare.max_pages pages, no empty page with more, at most MAX_ITEMS_PER_PAGE items per
        page and MAX_ITEMS_PER_ACCOUNT in all. ``parse`` turns each item into what is kept, page by page, so a
        page's raw JSON is never held while the next one is fetched.
        An API that ignores ``page`` (a later page repeats an earlier one, or says it is another page) is counted
        (``pagination``) and read another way: all items in one page of ``total_count`` when the first page said
        how many there are and the API honours ``per_page``, else the first page alone (``complete`` False)."""
        config = self.client.config
        kept: list[Any] = []
        seen: set[str] = set()
        total: int | None = None
        page = 1
        while True:
            if page > config.max_pages:
                raise self.fail("pagination", f"still has_more after {config.max_pages} pages (cloudflare.max_pages)")
            query = {**params, "page": page}
            if config.per_page:
                query["per_page"] = config.per_page
            body = await self.get(path_suffix, query)
            page_items = self._items(body, items_key, page, len(kept))
            fingerprint = _page_fingerprint(page_items) if page_items else None
            ignored = self._ignores_page(body, page) or (
                f"page {page} repeats an earlier page" if fingerprint in seen else None)
            if ignored:
                self.fail("pagination", f"{ignored}: the server ignores the page parameter")
                return await self._in_one_page(path_suffix, params, items_key, parse, kept, total, page)
            if fingerprint is not None:
                seen.add(fingerprint)
            has_more = self._has_more(body, page)
            if has_more and not page_items:
                raise self.fail("pagination", f"page {page} is empty but has_more is true")
            total = total if page > 1 else _total_count(body)
            kept.extend(page_items if parse is None else map(parse, page_items))
            del body, page_items  # only what parse kept lives on while the next page is fetched
            if not has_more:
                return Pages(kept, page)
            page += 1

    async def _in_one_page(self, path_suffix: str, params: dict[str, Any], items_key: str | None,
                           parse: Callable[[Any], Any] | None, first: list[Any], total: int | None,
                           pages: int) -> Pages:
        """All ``total`` items in one page when the API honours ``per_page``; else the most items one answer held
        (``first``: what the pages read so far kept), incomplete. ``pages``: the requests made so far."""
        if total is not None and len(first) >= total:
            return Pages(first, pages)
        if total is None or total > MAX_ITEMS_PER_PAGE:
            return Pages(first, pages, complete=False)
        body = await self.get(path_suffix, {**params, "page": 1, "per_page": total})
        items = self._items(body, items_key, 1, 0)
        if len(items) <= len(first):
            return Pages(first, pages + 1, complete=False)
        return Pages(list(items if parse is None else map(parse, items)), pages + 1, complete=len(items) >= total)

    def _items(self, body: dict[str, Any], items_key: str | None, page: int, kept: int) -> list[Any]:
        result = body.get("result")
        items = result if items_key is None else result.get(items_key) if isinstance(result, dict) else None
        if not isinstance(items, list):
            where = "result" if items_key is None else f"result.{items_key}"
            raise self.fail("invalid_response", f"page {page}: {where} is not a list")
        if len(items) > MAX_ITEMS_PER_PAGE:
            raise self.fail("invalid_response", f"page {page} has {len(items):,} items, more than the "
                            f"limit of {MAX_ITEMS_PER_PAGE:,} per page")
        if kept + len(items) > MAX_ITEMS_PER_ACCOUNT:
            raise self.fail("invalid_response", f"more than {MAX_ITEMS_PER_ACCOUNT:,} items over {page} pages, "
                            "the limit per account")
        return items

    @staticmethod
    def _pagination(body: dict[str, Any]) -> Any:
        result = body.get("result")
        pagination = result.get("pagination") if isinstance(result, dict) else None
        return pagination if isinstance(pagination, dict) else body.get("result_info")

    def _ignores_page(self, body: dict[str, Any], page: int) -> str | None:
        pagination = self._pagination(body)
        served = pagination.get("page") if isinstance(pagination, dict) else None
        if page > 1 and is_number(served) and served not in (0, page):
            return f"asked for page {page}, got page {served}"
        return None

    def _has_more(self, body: dict[str, Any], page: int) -> bool:
        """Whether a later page exists: ``has_more`` of ``result.pagination`` or ``result_info`` (invoice
        history), else ``total_pages`` or ``total_count`` of ``result_info`` (V4 lists)."""
        pagination = self._pagination(body)
        if pagination is None:
            return False
        if not isinstance(pagination, dict) or not isinstance(pagination.get("has_more", False), bool):
            raise self.fail("invalid_response", f"page {page}: pagination.has_more is not a boolean")
        if "has_more" in pagination:
            return bool(pagination["has_more"])
        total_pages, per_page, total = (pagination.get(k) for k in ("total_pages", "per_page", "total_count"))
        if isinstance(total_pages, int | float):
            return page < total_pages
        if isinstance(total, int | float) and isinstance(per_page, int | float) and per_page > 0:
            return page * per_page < total
        return False


def _total_count(body: dict[str, Any]) -> int | None:
    """How many items the first page says there are, when it says so."""
    pagination = AccountApi._pagination(body)
    total = pagination.get("total_count") if isinstance(pagination, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None
