"""One account's view of the API, for one poll of one collector: requests under
``/accounts/{id}/ai-gateway/``, followed pages, and the poll's counts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from exporter.cloudflare.body import is_number
from exporter.cloudflare.client import MAX_ITEMS_PER_PAGE, CloudflareClient
from exporter.cloudflare.errors import ApiError, PollCounts
from exporter.config.model import AccountConfig

ACCOUNT_PATH = "/accounts/{id}/ai-gateway/"
MAX_ITEMS_PER_ACCOUNT = 10_000  # items over all pages of one poll of one account


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
                        parse: Callable[[Any], Any] | None = None) -> tuple[list[Any], int]:
        """Every page's ``result[items_key]`` items (``result`` itself when None), following ``page`` while
        the answer says there is more, and the page count.
        Guards: at most cloudflare.max_pages pages, no repeated page, no wrong page, no empty page with more,
        at most MAX_ITEMS_PER_PAGE items per page and MAX_ITEMS_PER_ACCOUNT in all. ``parse`` turns each item
        into what is kept, page by page, so a page's raw JSON is never held while the next one is fetched."""
        config = self.client.config
        kept: list[Any] = []
        seen: set[str] = set()
        page = 1
        while True:
            if page > config.max_pages:
                raise self.fail("pagination", f"still has_more after {config.max_pages} pages (cloudflare.max_pages)")
            query = {**params, "page": page}
            if config.per_page:
                query["per_page"] = config.per_page
            body = await self.get(path_suffix, query)
            result = body.get("result")
            page_items = result if items_key is None else result.get(items_key) if isinstance(result, dict) else None
            if not isinstance(page_items, list):
                where = "result" if items_key is None else f"result.{items_key}"
                raise self.fail("invalid_response", f"page {page}: {where} is not a list")
            has_more = self._has_more(body, page, len(page_items))
            if len(page_items) > MAX_ITEMS_PER_PAGE:
                raise self.fail("invalid_response", f"page {page} has {len(page_items):,} items, more than the "
                                f"limit of {MAX_ITEMS_PER_PAGE:,} per page")
            if len(kept) + len(page_items) > MAX_ITEMS_PER_ACCOUNT:
                raise self.fail("invalid_response", f"more than {MAX_ITEMS_PER_ACCOUNT:,} items over {page} pages, "
                                "the limit per account")
            if has_more and not page_items:
                raise self.fail("pagination", f"page {page} is empty but has_more is true")
            fingerprint = _page_fingerprint(page_items)
            if page_items and fingerprint in seen:
                raise self.fail("pagination",
                                f"page {page} repeats an earlier page: the server ignores the page parameter")
            seen.add(fingerprint)
            kept.extend(page_items if parse is None else map(parse, page_items))
            del body, result, page_items  # only what parse kept lives on while the next page is fetched
            if not has_more:
                return kept, page
            page += 1

    def _has_more(self, body: dict[str, Any], page: int, count: int) -> bool:
        """Whether a later page exists: ``has_more`` of ``result.pagination`` or ``result_info`` (invoice
        history), else ``total_pages`` or ``total_count`` of ``result_info`` (V4 lists)."""
        result = body.get("result")
        pagination = result.get("pagination") if isinstance(result, dict) else None
        if not isinstance(pagination, dict):
            pagination = body.get("result_info")
        if pagination is None:
            return False
        if not isinstance(pagination, dict) or not isinstance(pagination.get("has_more", False), bool):
            raise self.fail("invalid_response", f"page {page}: pagination.has_more is not a boolean")
        served = pagination.get("page")
        if page > 1 and is_number(served) and served not in (0, page):
            raise self.fail("pagination",
                            f"asked for page {page}, got page {served}: the server ignores the page parameter")
        if "has_more" in pagination:
            return bool(pagination["has_more"])
        total_pages, per_page, total = (pagination.get(k) for k in ("total_pages", "per_page", "total_count"))
        if isinstance(total_pages, int | float):
            return page < total_pages
        if isinstance(total, int | float) and isinstance(per_page, int | float) and per_page > 0:
            return page * per_page < total
        return False
