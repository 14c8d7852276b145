"""Tests of the fake Cloudflare API (tests/fakeapi.py): wire format, auth, faults, limits, lifecycle."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from exporter.collectors.credit_balance import CreditBalanceSample
from exporter.demo import DEMO_BASE_URL, demo_transport
from tests.fakeapi import (
    ACCOUNT_PATHS,
    ANY_ENDPOINT,
    DEMO_ACCOUNTS,
    DEMO_REVOKED_TOKEN,
    DEMO_TOKEN,
    ENDPOINT_NAMES,
    FakeCloudflareAPI,
    Fault,
    demo_api,
    invoice,
)

pytestmark = pytest.mark.timeout(20)

ACCT = "023e105f4ecef8ad9ca31a8372d0c353"
OTHER = "0123456789abcdef0123456789abcdef"
TOKEN = "fake-api-token"
NOW = 1_750_000_000.0


def history_path(account_id: str) -> str:
    return f"/accounts/{account_id}/ai-gateway/billing/invoice-history"


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for_request(fake: FakeCloudflareAPI, account_id: str) -> None:
    """Wait until the fake has received a request for the account (it may still be sleeping on it)."""
    deadline = time.monotonic() + 5
    while not fake.requests_for(account_id):
        assert time.monotonic() < deadline, "the request never arrived"
        time.sleep(0.01)


def error_code(response: httpx.Response) -> int:
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    code: int = body["errors"][0]["code"]
    return code


@pytest.fixture
def api() -> Iterator[FakeCloudflareAPI]:
    fake = FakeCloudflareAPI()
    fake.add_account(
        ACCT,
        "production",
        [
            invoice(id="in_a", amount_due=1000, created=1_700_000_000),
            invoice(id="in_m", amount_due=250.5, created=1_700_000_100, origin="manual"),
        ],
    )
    with fake:
        yield fake


@pytest.fixture
def client(api: FakeCloudflareAPI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, headers=bearer(), timeout=5) as c:
        yield c


@pytest.fixture(scope="module")
def demo() -> Iterator[FakeCloudflareAPI]:
    with demo_api(now=NOW) as fake:
        yield fake


@pytest.fixture
def demo_client(demo: FakeCloudflareAPI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.base_url, headers=bearer(DEMO_TOKEN), timeout=5) as c:
        yield c


# ---- wire format and pagination ---------------------------------------------------------------------------


def test_success_envelope_and_headers(client: httpx.Client) -> None:
    response = client.get(history_path(ACCT))
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert re.fullmatch(r"[0-9a-f]{16}-[A-Z]{3}", response.headers["cf-ray"])
    assert re.fullmatch(r'"default";r=\d+;t=\d+', response.headers["ratelimit"])
    assert response.headers["ratelimit-policy"] == '"default";q=1200;w=300'
    body = response.json()
    assert body["success"] is True
    assert body["errors"] == [] and body["messages"] == []
    pagination = {"has_more": False, "page": 1, "per_page": 50, "total_count": 2}
    assert body["result"]["pagination"] == pagination
    assert body["result_info"] == pagination
    first = body["result"]["invoices"][0]
    assert first["id"] == "in_a" and first["amount_remaining"] == 1000
    assert set(first) == {
        "id",
        "amount_due",
        "amount_paid",
        "amount_remaining",
        "currency",
        "status",
        "created",
        "attempt_count",
        "attempted",
        "auto_advance",
        "created_by",
        "description",
        "invoice_origin",
        "invoice_pdf",
    }


def test_demo_bulk_paginates_in_three_pages(demo_client: httpx.Client) -> None:
    seen: list[str] = []
    pages = []
    for page in (1, 2, 3):
        response = demo_client.get(history_path(DEMO_ACCOUNTS["bulk"]), params={"page": page, "per_page": 50})
        body = response.json()
        pages.append(body["result_info"])
        seen += [inv["id"] for inv in body["result"]["invoices"]]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert [p["page"] for p in pages] == [1, 2, 3]
    assert {p["total_count"] for p in pages} == {120}
    assert len(seen) == len(set(seen)) == 120
    beyond = demo_client.get(history_path(DEMO_ACCOUNTS["bulk"]), params={"page": 4}).json()
    assert beyond["result"]["invoices"] == [] and beyond["result_info"]["has_more"] is False


def test_per_page_and_cap(demo_client: httpx.Client) -> None:
    path = history_path(DEMO_ACCOUNTS["bulk"])
    seven = demo_client.get(path, params={"per_page": 7, "page": 2}).json()
    assert len(seven["result"]["invoices"]) == 7
    assert seven["result_info"] == {"has_more": True, "page": 2, "per_page": 7, "total_count": 120}
    capped = demo_client.get(path, params={"per_page": 500}).json()
    assert capped["result_info"]["per_page"] == 100 and len(capped["result"]["invoices"]) == 100


@pytest.mark.parametrize("params", [{"page": 0}, {"page": "two"}, {"per_page": -1}, {"per_page": ""}])
def test_invalid_paging_is_400(demo_client: httpx.Client, params: dict[str, Any]) -> None:
    response = demo_client.get(history_path(DEMO_ACCOUNTS["bulk"]), params=params)
    assert response.status_code == 400
    assert error_code(response) == 1001


def test_type_filter(demo_client: httpx.Client) -> None:
    path = history_path(DEMO_ACCOUNTS["bulk"])

    def fetch(kind: str) -> list[dict[str, Any]]:
        body = demo_client.get(path, params={"type": kind, "per_page": 100}).json()
        invoices: list[dict[str, Any]] = body["result"]["invoices"]
        return invoices

    manual, auto = fetch("manual"), fetch("auto")
    assert len(manual) == 24 and {i["invoice_origin"] for i in manual} == {"manual"}
    assert len(auto) == 96 and "manual" not in {i["invoice_origin"] for i in auto}
    bad = demo_client.get(path, params={"type": "weekly"})
    assert bad.status_code == 400 and error_code(bad) == 1001


def test_malformed_invoice_entries_are_served_as_is(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    weird: list[Any] = [7, "nonsense", {"amount_due": "12"}, None]
    api.add_account(OTHER, "weird", weird)
    body = client.get(history_path(OTHER)).json()
    assert body["result"]["invoices"] == weird
    assert len(client.get(history_path(OTHER), params={"type": "auto"}).json()["result"]["invoices"]) == 4


def test_ignore_page(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.accounts[ACCT].ignore_page = True
    first = client.get(history_path(ACCT), params={"per_page": 1, "page": 1}).json()
    second = client.get(history_path(ACCT), params={"per_page": 1, "page": 2}).json()
    assert second["result"]["invoices"] == first["result"]["invoices"]
    assert second["result_info"]["has_more"] is True and second["result_info"]["page"] == 1


def test_endless_has_more(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.accounts[ACCT].endless_has_more = True
    last = client.get(history_path(ACCT), params={"page": 1}).json()
    past = client.get(history_path(ACCT), params={"page": 9}).json()
    assert last["result_info"]["has_more"] is True and len(last["result"]["invoices"]) == 2
    assert past["result_info"]["has_more"] is True and past["result"]["invoices"] == []


# ---- routing and authentication ----------------------------------------------------------------------------


def test_routing_errors(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    unknown = client.get(history_path(OTHER))
    assert unknown.status_code == 403 and error_code(unknown) == 9109
    malformed = client.get(history_path("NOT-AN-ID"))
    assert malformed.status_code == 400 and error_code(malformed) == 7003
    assert "/client/v4/accounts/NOT-AN-ID" in malformed.json()["errors"][0]["message"]
    nowhere = client.get("/zones")
    assert nowhere.status_code == 404 and error_code(nowhere) == 7000
    posted = client.post(history_path(ACCT), json={"x": 1})
    assert posted.status_code == 405 and posted.headers["allow"] == "GET"
    head = client.head(history_path(ACCT))
    assert head.status_code == 405 and head.content == b""
    assert client.get(history_path(ACCT)).status_code == 200  # the keep-alive connection still works


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 400, 6003),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 400, 6003),
        ({"Authorization": "Bearer wrong-token"}, 403, 10000),
        ({"X-Auth-Email": "billing@example.com", "X-Auth-Key": "wrong"}, 403, 9103),
        ({"X-Auth-Email": "billing@example.com"}, 400, 6003),
    ],
)
def test_auth_failures(api: FakeCloudflareAPI, headers: dict[str, str], status: int, code: int) -> None:
    response = httpx.get(api.base_url + history_path(ACCT), headers=headers, timeout=5)
    assert response.status_code == status
    assert error_code(response) == code


def test_key_pair_auth(api: FakeCloudflareAPI) -> None:
    headers = {"X-Auth-Email": "billing@example.com", "X-Auth-Key": "fake-global-api-key"}
    response = httpx.get(api.base_url + history_path(ACCT), headers=headers, timeout=5)
    assert response.status_code == 200 and response.json()["success"] is True
    assert api.requests[-1].auth == "key"


def test_account_specific_token(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.add_account(OTHER, "separate", [], token="other-token")
    assert error_code(client.get(history_path(OTHER))) == 9109
    assert client.get(history_path(OTHER), headers=bearer("other-token")).status_code == 200
    assert error_code(client.get(history_path(ACCT), headers=bearer("other-token"))) == 9109
    key = {"X-Auth-Email": "billing@example.com", "X-Auth-Key": "fake-global-api-key"}
    assert httpx.get(api.base_url + history_path(OTHER), headers=key, timeout=5).status_code == 200


def test_revoked_tokens(demo_client: httpx.Client, demo: FakeCloudflareAPI) -> None:
    legacy = history_path(DEMO_ACCOUNTS["legacy"])
    for token in (DEMO_REVOKED_TOKEN, DEMO_TOKEN):
        response = demo_client.get(legacy, headers=bearer(token))
        assert response.status_code == 403
        assert response.json()["errors"][0] == {"code": 1000, "message": "Invalid API Token"}
    listing = demo_client.get("/accounts", headers=bearer(DEMO_REVOKED_TOKEN))
    assert listing.status_code == 403 and error_code(listing) == 1000


def test_revoke_token_at_runtime(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    assert client.get(history_path(ACCT)).status_code == 200
    api.revoke_token(TOKEN)
    response = client.get(history_path(ACCT))
    assert response.status_code == 403 and error_code(response) == 1000


# ---- faults ------------------------------------------------------------------------------------------------


def test_fault_rate_limited(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.inject(ACCT, Fault.rate_limited(retry_after=2.5))
    response = client.get(history_path(ACCT))
    assert response.status_code == 429 and error_code(response) == 10100
    assert response.headers["retry-after"] == "3"
    assert response.headers["ratelimit"] == '"default";r=0;t=3'
    assert client.get(history_path(ACCT)).status_code == 200


def test_fault_server_error(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.inject(ACCT, Fault.server_error(), Fault.server_error(503))
    first, second = client.get(history_path(ACCT)), client.get(history_path(ACCT))
    assert first.status_code == 502 and second.status_code == 503
    assert first.headers["content-type"] == "text/html"
    assert "502 Bad Gateway" in first.text and "cloudflare" in first.text
    with pytest.raises(json.JSONDecodeError):
        first.json()


def test_fault_api_error(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    unauthorized = Fault.api_error(9109, "Unauthorized to access requested resource", status=403)
    api.inject(ACCT, Fault.api_error(), unauthorized)
    first = client.get(history_path(ACCT))
    assert first.status_code == 200
    assert first.json()["errors"] == [{"code": 10000, "message": "Authentication error"}]
    second = client.get(history_path(ACCT))
    assert second.status_code == 403 and error_code(second) == 9109


def test_fault_delay_and_client_timeout(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.inject(ACCT, Fault.delay(0.6), Fault.delay(0.2))
    with pytest.raises(httpx.ReadTimeout):
        client.get(history_path(ACCT), timeout=0.2)
    started = time.monotonic()
    response = client.get(history_path(ACCT))
    assert response.status_code == 200 and time.monotonic() - started >= 0.2


def test_fault_invalid_json(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.inject(ACCT, Fault.invalid_json())
    response = client.get(history_path(ACCT))
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_fault_wrong_shape(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.inject(ACCT, Fault.wrong_shape())
    body = client.get(history_path(ACCT)).json()
    assert body["success"] is True and isinstance(body["result"]["invoices"], str)


def test_fault_order_precedence_and_scope(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.add_account(OTHER, "other", [])
    api.inject(None, Fault.server_error(503), Fault.server_error(504))
    api.inject(ACCT, Fault.api_error(1234, "first"), Fault.api_error(5678, "second"))
    assert client.get("/accounts").status_code == 200  # faults apply only to invoice history
    statuses = [client.get(history_path(ACCT)) for _ in range(5)]
    assert [error_code(r) for r in statuses[:2]] == [1234, 5678]
    assert [r.status_code for r in statuses[2:]] == [503, 504, 200]
    assert client.get(history_path(OTHER)).status_code == 200


def test_latency_does_not_block_other_accounts(api: FakeCloudflareAPI) -> None:
    api.add_account(OTHER, "slow", [], latency=0.5)
    results: dict[str, float] = {}

    def fetch(account_id: str) -> None:
        started = time.monotonic()
        httpx.get(api.base_url + history_path(account_id), headers=bearer(), timeout=5)
        results[account_id] = time.monotonic() - started

    slow = threading.Thread(target=fetch, args=(OTHER,))
    slow.start()
    wait_for_request(api, OTHER)
    fetch(ACCT)
    slow.join()
    assert results[ACCT] < 0.4 and results[OTHER] >= 0.5


# ---- rate limit --------------------------------------------------------------------------------------------


def test_rate_limit_refuses_then_recovers() -> None:
    fake = FakeCloudflareAPI(rate_limit=(3, 0.5))
    fake.add_account(ACCT, "production", [])
    with fake, httpx.Client(base_url=fake.base_url, headers=bearer(), timeout=5) as c:
        admitted = [c.get(history_path(ACCT)) for _ in range(3)]
        assert [r.status_code for r in admitted] == [200, 200, 200]
        assert admitted[0].headers["ratelimit-policy"] == '"default";q=3;w=1'
        assert admitted[2].headers["ratelimit"].startswith('"default";r=0;')
        refused = c.get(history_path(ACCT))
        assert refused.status_code == 429 and error_code(refused) == 10100
        assert refused.headers["retry-after"] == "1"
        key = {"X-Auth-Email": "billing@example.com", "X-Auth-Key": "fake-global-api-key"}
        other = httpx.get(fake.base_url + history_path(ACCT), headers=key, timeout=5)
        assert other.status_code == 200  # counted per credential
        time.sleep(0.55)
        assert c.get(history_path(ACCT)).status_code == 200


# ---- account listing ---------------------------------------------------------------------------------------


def test_accounts_listing_pages(demo_client: httpx.Client) -> None:
    first = demo_client.get("/accounts", params={"per_page": 3}).json()
    second = demo_client.get("/accounts", params={"per_page": 3, "page": 2}).json()
    assert first["success"] is True
    assert first["result_info"] == {"page": 1, "per_page": 3, "count": 3, "total_count": 5, "total_pages": 2}
    assert second["result_info"]["count"] == 2
    names = [a["name"] for a in first["result"] + second["result"]]
    assert names == ["production", "staging", "research", "bulk", "hobby"]
    assert first["result"][0]["id"] == DEMO_ACCOUNTS["production"]
    assert first["result"][0]["type"] == "standard"


def test_accounts_listing_by_credential(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.add_account(OTHER, "separate", [], token="other-token")
    assert [a["id"] for a in client.get("/accounts").json()["result"]] == [ACCT]
    own = client.get("/accounts", headers=bearer("other-token")).json()
    assert [a["id"] for a in own["result"]] == [OTHER]
    assert error_code(client.get("/accounts", headers=bearer("nope"))) == 10000


# ---- mutation, recording, demo data, lifecycle -------------------------------------------------------------


def test_pay_invoice(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.pay_invoice(ACCT, "in_m")
    paid = next(i for i in client.get(history_path(ACCT)).json()["result"]["invoices"] if i["id"] == "in_m")
    assert (paid["status"], paid["amount_paid"], paid["amount_remaining"]) == ("paid", 250.5, 0)
    with pytest.raises(KeyError):
        api.pay_invoice(ACCT, "in_missing")


def test_requests_are_recorded(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.inject(ACCT, Fault.server_error())
    client.get(history_path(ACCT), params={"page": 2, "type": "auto"})
    client.get(history_path(ACCT), headers={"Authorization": "Bearer x"})
    client.get("/accounts")
    first, second, third = api.requests
    assert (first.method, first.path, first.query, first.auth, first.status) == (
        "GET",
        "/client/v4" + history_path(ACCT),
        {"page": "2", "type": "auto"},
        "bearer",
        502,
    )
    assert (second.status, third.account_id, third.status) == (403, None, 200)
    assert first.time <= second.time <= third.time
    assert api.requests_for(ACCT) == [first, second]


def test_invoice_builder_defaults() -> None:
    built = invoice(id="in_1", amount_due=100.25, amount_paid=40, created=5)
    assert built["amount_remaining"] == 60.25
    assert (built["status"], built["invoice_origin"]) == ("open", "subscription_cycle")
    assert built["currency"] == "usd"


def test_demo_data(demo: FakeCloudflareAPI) -> None:
    assert list(DEMO_ACCOUNTS) == ["production", "staging", "research", "bulk", "legacy", "hobby"]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in DEMO_ACCOUNTS.values())
    invoices = {name: demo.accounts[i].invoices for name, i in DEMO_ACCOUNTS.items()}
    assert [i["status"] for i in invoices["production"]] == ["paid"] * 12
    assert any(i["amount_due"] != int(i["amount_due"]) for i in invoices["production"])
    staging_open = [i for i in invoices["staging"] if i["status"] == "open"]
    assert len(invoices["staging"]) == 12 and len(staging_open) == 1
    assert staging_open[0]["attempted"] is False and staging_open[0]["attempt_count"] == 0
    assert NOW - staging_open[0]["created"] == pytest.approx(3 * 86400, abs=1)
    research_open = [i for i in invoices["research"] if i["status"] == "open"]
    assert sorted(i["attempt_count"] for i in research_open) == [1, 3]
    assert all(i["attempted"] for i in research_open)
    assert max(NOW - i["created"] for i in research_open) == pytest.approx(40 * 86400, abs=1)
    bulk = invoices["bulk"]
    assert len(bulk) == 120 and {i["currency"] for i in bulk} == {"usd", "eur"}
    statuses = [i["status"] for i in bulk]
    for odd in ("void", "draft", None, "uncollectible"):
        assert statuses.count(odd) == 1
    assert 1 < statuses.count("open") < 6
    assert demo.accounts[DEMO_ACCOUNTS["legacy"]].token == DEMO_REVOKED_TOKEN


def test_stop_is_fast_and_closes_everything() -> None:
    fake = FakeCloudflareAPI()
    fake.add_account(ACCT, "slow", [], latency=10)
    fake.start()
    port = fake.port
    idle = httpx.Client(base_url=fake.base_url, headers=bearer(), timeout=5)
    assert idle.get("/accounts").status_code == 200  # leaves an idle keep-alive connection
    outcome: list[BaseException] = []

    def sleeping_request() -> None:
        try:
            httpx.get(fake.base_url + history_path(ACCT), headers=bearer(), timeout=5)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    sleeper = threading.Thread(target=sleeping_request)
    sleeper.start()
    wait_for_request(fake, ACCT)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 0.5
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with pytest.raises(httpx.HTTPError):
        idle.get("/accounts")
    idle.close()
    sleeper.join(timeout=2)
    assert not sleeper.is_alive()
    assert len(outcome) == 1  # the client saw the connection close instead of hanging
    assert fake.requests_for(ACCT)[0].status == 0  # abandoned, never answered


def test_ipv6_base_url() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    fake = FakeCloudflareAPI(host="::1")
    try:
        fake.start()
    except OSError:
        pytest.skip("cannot bind ::1")
    try:
        assert fake.base_url == f"http://[::1]:{fake.port}/client/v4"
        assert httpx.get(fake.base_url + "/accounts", headers=bearer(), timeout=5).status_code == 200
    finally:
        fake.stop()


@pytest.mark.e2e
def test_standalone_main() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/client/v4", first_line)
        assert url, first_line
        response = httpx.get(url[0] + "/accounts", headers=bearer(DEMO_TOKEN), timeout=5)
        assert response.json()["result_info"]["total_count"] == 5  # all but legacy (its own, revoked token)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---- the other billing endpoints -----------------------------------------------------------------------------

HOUR_MS = 3_600_000
DAY0 = 1_749_945_600  # 2025-06-15 00:00:00 UTC
def billing_path(account_id: str, endpoint: str) -> str:
    """The path of one of the account's REST endpoints."""
    return f"/accounts/{account_id}/ai-gateway/{ACCOUNT_PATHS[endpoint]}"


def result(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    assert "result_info" not in body
    return body["result"]


def test_an_account_without_unified_billing_by_default(client: httpx.Client) -> None:
    balance = result(client.get(billing_path(ACCT, "credit_balance")))
    assert balance == {"balance": 0.0, "has_default_payment_method": False, "payment_method": None,
                       "topup_config": None}  # first_topup_success is left out unless set
    assert result(client.get(billing_path(ACCT, "spending_limit"))) == {"config": None, "enabled": False}
    usage = client.get(billing_path(ACCT, "usage_history"), params={"value_grouping_window": "day"})
    assert result(usage) == {"history": []}
    assert result(client.get(billing_path(ACCT, "topup_config"))) is None
    preview = client.get(billing_path(ACCT, "invoice_preview"))
    assert preview.status_code == 404 and error_code(preview) == 1004


def test_billing_state_set_from_a_test_is_served(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    topup = {"amount": 5000, "threshold": 1000, "disabledReason": None, "error": "card declined",
             "lastFailedAt": 1_750_000_000_000}
    preview = {"id": "upcoming", "amount_due": 1234, "amount_paid": 0, "amount_remaining": 1234, "currency": "usd",
               "period_start": 1, "period_end": 2, "status": "draft", "invoice_lines": []}
    api.set_billing(ACCT, balance=2500.5, has_default_payment_method=True, topup_config=topup,
                    payment_method={"brand": "visa", "last4": "4242"}, first_topup_success=True,
                    spending_limit={"amount": 10000, "duration": "daily", "strategy": "fixed"},
                    spending_limit_enabled=True, invoice_preview=preview)
    balance = result(client.get(billing_path(ACCT, "credit_balance")))
    assert balance == {"balance": 2500.5, "has_default_payment_method": True, "topup_config": topup,
                       "payment_method": {"brand": "visa", "last4": "4242"}, "first_topup_success": True}
    assert result(client.get(billing_path(ACCT, "topup_config"))) == topup
    limit = result(client.get(billing_path(ACCT, "spending_limit")))
    assert limit == {"config": {"amount": 10000, "duration": "daily", "strategy": "fixed"}, "enabled": True}
    assert result(client.get(billing_path(ACCT, "invoice_preview"))) == preview
    api.set_billing(ACCT, invoice_preview=None)  # nothing upcoming again
    assert client.get(billing_path(ACCT, "invoice_preview")).status_code == 404
    with pytest.raises(TypeError):
        api.set_billing(ACCT, credits=1)
    with pytest.raises(KeyError):
        api.set_billing(OTHER, balance=1)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"value_grouping_window": "week"},
        {"value_grouping_window": "day", "start_time": "2025-06-15"},
        {"value_grouping_window": "hour", "end_time": "-5"},
        {"value_grouping_window": "hour", "start_time": "2000", "end_time": "1000"},
    ],
)
def test_usage_history_query_is_validated(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get(billing_path(ACCT, "usage_history"), params=params)
    assert response.status_code == 400 and error_code(response) == 1001


def test_usage_history_groups_by_hour_or_day_in_milliseconds(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    # Three hours on day 0 (10, 20, 30 at 00:00, 01:00, 01:00+30min) and one on day 1 (5 at 23:00).
    api.set_billing(ACCT, usage=[(DAY0, 10.0), (DAY0 + 3600, 20.0), (DAY0 + 5400, 30.0), (DAY0 + 86400 + 82800, 5.0)])
    path = billing_path(ACCT, "usage_history")
    hours = result(client.get(path, params={"value_grouping_window": "hour"}))["history"]
    assert [(e["start_time"], e["end_time"], e["aggregated_value"]) for e in hours] == [
        (DAY0 * 1000, DAY0 * 1000 + HOUR_MS, 10.0),
        (DAY0 * 1000 + HOUR_MS, DAY0 * 1000 + 2 * HOUR_MS, 50.0),
        ((DAY0 + 86400 + 82800) * 1000, (DAY0 + 2 * 86400) * 1000, 5.0),
    ]
    assert all(isinstance(e["id"], str) and e["id"] for e in hours)
    days = result(client.get(path, params={"value_grouping_window": "day"}))["history"]
    assert [(e["start_time"], e["aggregated_value"]) for e in days] == [
        (DAY0 * 1000, 60.0),
        ((DAY0 + 86400) * 1000, 5.0),
    ]
    # start_time/end_time are milliseconds, start inclusive and end exclusive.
    window = {"value_grouping_window": "day", "start_time": str(DAY0 * 1000 + HOUR_MS),
              "end_time": str((DAY0 + 86400) * 1000)}
    assert [e["aggregated_value"] for e in result(client.get(path, params=window))["history"]] == [50.0]
    # Seconds where milliseconds belong mean January 1970: such a start lets everything in, such an end nothing.
    seconds = {"value_grouping_window": "day", "start_time": str(DAY0)}
    assert len(result(client.get(path, params=seconds))["history"]) == 2
    seconds = {"value_grouping_window": "day", "end_time": str(DAY0 + 86400)}
    assert result(client.get(path, params=seconds))["history"] == []


def test_faults_are_queued_per_endpoint(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.inject(ACCT, Fault.server_error(503), endpoint="credit_balance")
    api.inject(None, Fault.api_error(1004, "Not found", status=404), endpoint="invoice_preview")
    assert client.get(history_path(ACCT)).status_code == 200  # other endpoints are untouched
    assert client.get(billing_path(ACCT, "spending_limit")).status_code == 200
    assert client.get(billing_path(ACCT, "credit_balance")).status_code == 503
    assert client.get(billing_path(ACCT, "credit_balance")).status_code == 200
    api.set_billing(ACCT, invoice_preview={"id": "x"})
    preview = client.get(billing_path(ACCT, "invoice_preview"))
    assert preview.status_code == 404 and error_code(preview) == 1004
    assert client.get(billing_path(ACCT, "invoice_preview")).status_code == 200
    # ANY_ENDPOINT: whichever endpoint of the account comes next; the endpoint's own queue goes first.
    api.inject(ACCT, Fault.rate_limited(retry_after=3), endpoint=ANY_ENDPOINT)
    api.inject(ACCT, Fault.server_error(502), endpoint="usage_history")
    usage = billing_path(ACCT, "usage_history")
    assert client.get(usage, params={"value_grouping_window": "day"}).status_code == 502
    limited = client.get(billing_path(ACCT, "topup_config"))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert client.get(billing_path(ACCT, "topup_config")).status_code == 200
    with pytest.raises(ValueError, match="unknown endpoint"):
        api.inject(ACCT, Fault.server_error(), endpoint="credit-balance")


@pytest.mark.parametrize(
    ("endpoint", "unusable"),
    [
        ("credit_balance", lambda r: isinstance(r["balance"], str)),
        ("spending_limit", lambda r: isinstance(r["config"], str)),
        ("usage_history", lambda r: isinstance(r["history"], str)),
        ("invoice_preview", lambda r: isinstance(r, list)),
        ("topup_config", lambda r: isinstance(r, str)),
    ],
)
def test_wrong_shape_and_invalid_json_per_endpoint(
    api: FakeCloudflareAPI, client: httpx.Client, endpoint: str, unusable: Any
) -> None:
    api.set_billing(ACCT, invoice_preview={"id": "x"})
    api.inject(ACCT, Fault.wrong_shape(), Fault.invalid_json(), Fault.delay(0.01), endpoint=endpoint)
    params = {"value_grouping_window": "day"}
    assert unusable(result(client.get(billing_path(ACCT, endpoint), params=params)))
    broken = client.get(billing_path(ACCT, endpoint), params=params)
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        broken.json()
    assert not unusable(result(client.get(billing_path(ACCT, endpoint), params=params)))  # delayed, then fine


def test_every_endpoint_authenticates_and_authorises(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.add_account(OTHER, "other", [], token="other-token")
    api.revoke_token("other-token")
    for endpoint in ACCOUNT_PATHS:
        params = {"value_grouping_window": "hour"}
        revoked = client.get(billing_path(OTHER, endpoint), params=params, headers=bearer("other-token"))
        assert revoked.status_code == 403 and error_code(revoked) == 1000, endpoint
        unknown = client.get(billing_path("f" * 32, endpoint), params=params)
        assert unknown.status_code == 403 and error_code(unknown) == 9109, endpoint
        nobody = client.get(billing_path(ACCT, endpoint), params=params, headers=bearer("nope"))
        assert nobody.status_code == 403 and error_code(nobody) == 10000, endpoint
        malformed = client.get(billing_path("NOT-AN-ID", endpoint), params=params)
        assert malformed.status_code == 400 and error_code(malformed) == 7003, endpoint


def test_write_methods_are_refused_and_recorded(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    base = f"/accounts/{ACCT}/ai-gateway/billing"
    writes = [("POST", "/topup"), ("POST", "/spending-limit"), ("DELETE", "/spending-limit"),
              ("POST", "/topup/config"), ("DELETE", "/topup/config"), ("PUT", "/credit-balance"),
              ("PATCH", "/usage-history"), ("POST", "/invoice-history")]
    for method, suffix in writes:
        response = client.request(method, base + suffix, json={"amount": 1000})
        assert response.status_code == 405 and response.headers["allow"] == "GET", (method, suffix)
        assert error_code(response) == 7001
    assert client.get(base + "/topup").status_code == 404  # no such read endpoint
    assert [(r.method, r.path.removeprefix("/client/v4" + base)) for r in api.writes()] == writes
    assert all(r.status == 405 and r.account_id == ACCT for r in api.writes())
    assert result(client.get(billing_path(ACCT, "credit_balance")))["balance"] == 0  # nothing was written


def test_requests_are_recorded_with_their_endpoint(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    for endpoint in ACCOUNT_PATHS:
        client.get(billing_path(ACCT, endpoint), params={"value_grouping_window": "day"})
    client.get("/accounts")
    client.post("/graphql", json={"query": "{ viewer { accounts(filter: {accountTag: \"x\"}) { x } } }",
                                  "variables": {"accountTag": ACCT}})
    assert [r.endpoint for r in api.requests] == [*ACCOUNT_PATHS, None, "gateway_analytics"]
    assert set(ENDPOINT_NAMES) == {*ACCOUNT_PATHS, "gateway_analytics"}
    assert api.requests_for(ACCT, "gateway_analytics")[0].status == 200  # refused by the schema, with HTTP 200
    assert [r.query for r in api.requests_for(ACCT, "usage_history")] == [{"value_grouping_window": "day"}]
    assert api.writes() == []


def test_latency_delays_every_billing_endpoint(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.accounts[ACCT].latency = 0.3
    started = time.monotonic()
    assert client.get(billing_path(ACCT, "spending_limit")).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_live_billing_is_read_at_each_request(api: FakeCloudflareAPI, client: httpx.Client) -> None:
    api.accounts[ACCT].live = lambda now: {"credit_balance": CreditBalanceSample(balance=round(now, 3))}
    first = result(client.get(billing_path(ACCT, "credit_balance")))["balance"]
    time.sleep(0.01)
    second = result(client.get(billing_path(ACCT, "credit_balance")))["balance"]
    assert abs(first - time.time()) < 5 and second > first


def test_the_fake_demo_and_the_in_process_demo_agree(demo: FakeCloudflareAPI) -> None:
    """Every demo account and endpoint answers the same through the fake and through demo_transport."""
    import asyncio

    async def in_process() -> list[tuple[int, Any]]:
        async with httpx.AsyncClient(transport=demo_transport(now=NOW), base_url=DEMO_BASE_URL) as c:
            return [(r.status_code, r.json()) for r in [await c.get(p, params=q, headers=h) for p, q, h in asks]]

    asks = []
    for name, account_id in DEMO_ACCOUNTS.items():
        headers = bearer(DEMO_REVOKED_TOKEN if name == "legacy" else DEMO_TOKEN)
        for endpoint in ACCOUNT_PATHS:
            asks.append((billing_path(account_id, endpoint), {"value_grouping_window": "hour", "per_page": "20"},
                         headers))
    with httpx.Client(base_url=demo.base_url, timeout=5) as c:
        fake = [(r.status_code, r.json()) for r in [c.get(p, params=q, headers=h) for p, q, h in asks]]
    assert fake == asyncio.run(in_process())
    assert {status for status, _ in fake} == {200, 403, 404}
