"""The status page at ``/``: what an operator opens first.

One row per account, the ones that need attention first: the health of every endpoint (ok / failed / not
polled yet / not enrolled, as a symbol and a word so that colour is never the only cue), the columns each
collector adds (what is unpaid, failed payments, the credit balance ...), the last and next poll and
the current error (secrets masked). Plain HTML and CSS, no JavaScript; below 900 px wide the table turns into
one card per account. Every value that comes from the config or the API is escaped.

It reads only what already exists: the store's snapshot (the data the collectors computed once per poll, the
config and its collectors) and the poller's schedule (``Poller.next_polls``). It keeps nothing of its own.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from exporter import __version__
from exporter.collectors.base import Collector
from exporter.collectors.cells import StatusCell, StatusLine
from exporter.snapshot import AccountState, EndpointState, Snapshot
from exporter.words import ago, duration, gmtime, short_utc, utc

MAX_MESSAGE = 300  # characters of an error message shown; the log has all of it
EMPTY = '<span class="muted">—</span>'
# Health of an endpoint or an account, worst first: (sort rank, symbol, word, CSS class).
FAILED = (0, "✖", "failed", "bad")
PENDING = (1, "…", "not polled yet", "wait")
OK = (3, "✔", "ok", "ok")
NOT_ENROLLED = (3, "○", "not enrolled", "off")
Health = tuple[int, str, str, str]


def e(value: object) -> str:
    """Escaped for HTML text and quoted attribute values alike."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class PageInput:
    snapshot: Snapshot
    telemetry_path: str = "/metrics"
    next_polls: Mapping[tuple[str, str], float | None] | None = None  # Poller.next_polls(); None: not running
    now: float | None = None
    demo: bool = False
    mask: Callable[[str], str] = str  # the secret redactor (RedactSecrets.mask)

    @property
    def collectors(self) -> Mapping[str, Collector[Any, Any]]:
        return self.snapshot.status.setup.collectors


def endpoint_health(state: EndpointState) -> Health:
    if not state.polled:
        return PENDING
    if not state.success:
        return FAILED
    return OK if state.enrolled else NOT_ENROLLED


def account_health(account: AccountState) -> Health:
    states = [endpoint_health(s) for s in account.endpoints.values()]
    if not states:
        return PENDING
    worst = min(states)
    return OK if worst == NOT_ENROLLED else worst


def _when(text: str, at: float, now: float) -> str:
    return f'<time datetime="{e(time.strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(at)))}" title="{e(utc(at))}">' \
           f'{e(text)}</time><small>{e(short_utc(at, now))}</small>'


# ---- the cells -------------------------------------------------------------------------------------------


def _badge(health: Health, text: str | None = None) -> str:
    _, symbol, word, css = health
    return f'<span class="badge {css}"><span aria-hidden="true">{symbol}</span> {e(text or word)}</span>'


def _stale(state: EndpointState, now: float) -> str:
    """A note under data that an older successful poll read, when the latest poll of it failed."""
    if state.polled and not state.success and state.last_success_time is not None:
        return f'<small class="stale">as of {e(ago(state.last_success_time, now))} (last poll failed)</small>'
    return ""


def _title(page: PageInput, endpoint: str) -> str:
    collector = page.collectors.get(endpoint)
    return collector.title if collector is not None else endpoint.replace("_", " ")


def _endpoints_cell(account: AccountState, page: PageInput) -> str:
    """Each endpoint's health in words, endpoints in the same state (and for the same reason) on one line."""
    groups: dict[tuple[Health, str], list[str]] = {}
    for endpoint, state in account.endpoints.items():
        health = endpoint_health(state)
        reason = state.last_error_reason or "" if health is FAILED else ""
        groups.setdefault((health, reason), []).append(_title(page, endpoint))
    items = []
    for (health, reason), names in sorted(groups.items(), key=lambda kv: (kv[0][0][0], kv[0][1])):
        everything = len(groups) == 1 and len(names) > 1
        what = f"all {len(names)} endpoints" if everything else ", ".join(names)
        why = f" ({reason})" if reason else ""
        items.append(f'<li class="{health[3]}"><span aria-hidden="true">{health[1]}</span> '
                     f"{e(health[2])}{e(why)}: {e(what)}</li>")
    return f'<ul class="endpoints">{"".join(items)}</ul>'


def _line(line: StatusLine) -> str:
    if line.style == "amount":
        return f'<span class="amount">{e(line.text)}</span>'
    if line.style == "note":
        return f"<small>{e(line.text)}</small>"
    if line.style == "warn":
        return f'<span class="badge warn"><span aria-hidden="true">⚠</span> {e(line.text)}</span>'
    return f"<div>{e(line.text)}</div>"


def _collector_cells(collector: Collector[Any, Any], state: EndpointState | None, now: float,
                     shared: bool) -> tuple[list[str], bool]:
    """The HTML of the collector's columns for one account, and whether they need attention. In a column other
    collectors fill too (``shared``), a collector without data names itself."""
    blank = [EMPTY] * (len(collector.columns) - 1)
    if state is None or state.data is None:
        if state is None:
            why = "not collected"
        elif state.polled and state.success and not state.enrolled:
            why = "not enrolled"
        else:
            why = "unknown (never read)"
        return [f'<div class="muted">{e(collector.title) + ": " if shared else ""}{why}</div>', *blank], False
    cells: tuple[StatusCell, ...] = collector.status(state.data, now)
    html_cells = ["".join(_line(line) for line in cell.lines) for cell in cells]
    html_cells[0] += _stale(state, now)
    return html_cells, any(cell.attention for cell in cells)


def _last_poll_cell(account: AccountState, now: float) -> str:
    times = [s.last_poll_time for s in account.endpoints.values() if s.last_poll_time is not None]
    if not times:
        return '<span class="muted">never polled</span>'
    return _when("polled " + ago(max(times), now), max(times), now)


def _interval(page: PageInput, endpoint: str) -> float | None:
    collector = page.collectors.get(endpoint)
    return collector.settings.interval if collector is not None else None


def _next_poll_cell(account: AccountState, page: PageInput, now: float) -> str:
    intervals = sorted({i for ep in account.endpoints if (i := _interval(page, ep)) is not None})
    every = f'<small>every {e(" / ".join(duration(i) for i in intervals))}</small>' if intervals else ""
    if page.next_polls is None:
        return f'<span class="muted">next: not scheduled</span>{every}'
    due = [page.next_polls[(account.account_id, ep)] for ep in account.endpoints
           if (account.account_id, ep) in page.next_polls]
    if any(at is None for at in due):
        return f"polling now{every}"
    upcoming = [at for at in due if at is not None]
    if not upcoming:
        return f'<span class="muted">next: not scheduled</span>{every}'
    soonest = min(upcoming)
    text = "next due now" if soonest <= now + 0.5 else f"next in {duration(soonest - now)}"
    return f'<time datetime="{e(time.strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(soonest)))}" ' \
           f'title="{e(utc(soonest))}">{e(text)}</time>{every}'


def _error_cell(account: AccountState, page: PageInput, now: float) -> str:
    """The current errors, one line per distinct (reason, message) with the endpoints that have it."""
    errors: dict[tuple[str, str], list[str]] = {}
    latest: dict[tuple[str, str], float] = {}
    for endpoint, state in account.endpoints.items():
        if state.polled and not state.success:
            message = page.mask(state.last_error_message or "")
            if len(message) > MAX_MESSAGE:
                message = message[:MAX_MESSAGE] + "…"
            key = (state.last_error_reason or "unknown", message)
            errors.setdefault(key, []).append(_title(page, endpoint))
            latest[key] = max(latest.get(key, 0.0), state.last_poll_time or 0.0)
    if not errors:
        return '<span class="muted">none</span>'
    parts = []
    for (reason, message), endpoints in errors.items():
        where = ", ".join(endpoints) if len(account.endpoints) > 1 else ""
        parts.append(f'<div class="error"><code>{e(reason)}</code> {e(message)}'
                     f'<small>{e(where + " · " if where else "")}{e(ago(latest[(reason, message)], now))}'
                     f'</small></div>')
    return "".join(parts)


# ---- the page --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    account: AccountState
    health: Health
    cells: list[tuple[str, str]]  # (column, HTML)
    attention: bool

    @property
    def order(self) -> tuple[int, int, str, str]:
        return self.health[0], 0 if self.attention else 1, self.account.name.lower(), self.account.account_id


def _row(account: AccountState, page: PageInput, now: float) -> _Row:
    health = account_health(account)
    account_cell = f'<span class="name">{e(account.name)}</span><code class="id">{e(account.account_id)}</code>'
    cells = [("Health", f"{_badge(health)}{_endpoints_cell(account, page)}"), ("Account", account_cell)]
    columns: dict[str, list[str]] = {}  # collectors that name the same column share it, one after the other
    attention = False
    for name, collector in page.collectors.items():
        shared = any(c is not collector and set(c.columns) & set(collector.columns) for c in page.collectors.values())
        found, needs = _collector_cells(collector, account.endpoints.get(name), now, shared) if collector.columns \
            else ([], False)
        for column, html_cell in zip(collector.columns, found, strict=True):
            columns.setdefault(column, []).append(html_cell)
        attention = attention or needs
    cells += [(column, f'<div class="cell">{"".join(parts) or EMPTY}</div>') for column, parts in columns.items()]
    cells += [
        ("Polls", f'{_last_poll_cell(account, now)}<div class="next">{_next_poll_cell(account, page, now)}</div>'),
        ("Last error", _error_cell(account, page, now)),
    ]
    return _Row(account, health, cells, attention)


def _html_row(row: _Row) -> str:
    tds = "".join(f'<td data-label="{e(label)}"><div>{content}</div></td>' for label, content in row.cells)
    return f'<tr class="{row.health[3]}">{tds}</tr>'


def _intervals(page: PageInput, endpoints: list[str]) -> str:
    by_interval: dict[float, list[str]] = {}
    for endpoint in endpoints:
        if (interval := _interval(page, endpoint)) is not None:
            by_interval.setdefault(interval, []).append(_title(page, endpoint))
    if len(by_interval) <= 1:
        return duration(next(iter(by_interval), page.snapshot.status.setup.config.poll.interval))
    return "; ".join(f"{', '.join(names)} every {duration(i)}" for i, names in sorted(by_interval.items()))


def render_status_page(page: PageInput) -> str:
    now = time.time() if page.now is None else page.now
    rows = sorted((_row(a, page, now) for a in page.snapshot.accounts.values()), key=lambda r: r.order)
    accounts = [row.account for row in rows]
    endpoints = list(dict.fromkeys(ep for a in accounts for ep in a.endpoints))
    counts: dict[str, int] = {}
    for account in accounts:
        word = account_health(account)[2]
        counts[word] = counts.get(word, 0) + 1
    failing = [a for a in accounts if account_health(a) is FAILED]

    headers = ["Health", "Account", *dict.fromkeys(c for collector in page.collectors.values()
                                                   for c in collector.columns), "Polls", "Last error"]
    # Relative links: they still work when a proxy serves the exporter under a path prefix.
    path = e("./" + page.telemetry_path.lstrip("/"))
    ready = page.snapshot.ready
    banners = []
    if page.demo:
        banners.append('<p class="banner demo"><strong>Demo mode.</strong> These are built-in sample accounts '
                       "answered inside the exporter, not your Cloudflare data. The <em>legacy</em> account "
                       "fails on purpose (its token is revoked).</p>")
    if not page.snapshot.status.reload_successful:
        banners.append('<p class="banner bad"><span aria-hidden="true">✖</span> <strong>The last config reload '
                       "failed;</strong> the previous config keeps running. The log says why.</p>")
    if failing:
        names = ", ".join(e(a.name) for a in failing[:10]) + (" …" if len(failing) > 10 else "")
        noun = "account is" if len(failing) == 1 else "accounts are"
        banners.append(f'<p class="banner bad"><span aria-hidden="true">✖</span> <strong>{len(failing)} '
                       f"{noun} failing:</strong> {names}. They are listed first.</p>")
    summary = ", ".join(f"{n} {word}" for word, n in sorted(counts.items(), key=lambda kv: kv[0] != "failed"))
    table = (f'<div class="scroll"><table><thead><tr>{"".join(f"<th>{e(h)}</th>" for h in headers)}</tr></thead>'
             f'<tbody>{"".join(map(_html_row, rows))}</tbody></table></div>' if rows
             else '<p class="muted">No accounts to poll (yet): check the config, or discovery.</p>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{"Demo · " if page.demo else ""}{f"{len(failing)} failing · " if failing else ""}\
Cloudflare AI Gateway Exporter</title>
<style>{CSS}</style></head>
<body>
<header><h1>Cloudflare AI Gateway Exporter</h1>
<nav><a href="{path}">Metrics</a> <a href="./-/healthy">Health</a> <a href="./-/ready">Readiness</a></nav>
<p class="facts"><span>Version {e(__version__)}</span>
<span>Poll interval {e(_intervals(page, endpoints))}</span>
<span>{len(accounts)} account{"" if len(accounts) == 1 else "s"}: {e(summary or "none")}</span>
<span>{"Ready" if ready else "Not ready: not every account polled yet"}</span>
<span>Page generated {e(utc(now))}</span></p></header>
<main>{"".join(banners)}
{table}
</main></body></html>
"""


CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2328;
background:#f6f8fa;overflow-wrap:break-word}
header{background:#fff;border-bottom:1px solid #d0d7de;padding:16px 24px}
h1{font-size:20px;margin:0 16px 4px 0;display:inline-block}
nav{display:inline-block}
nav a{margin-right:14px;font-weight:600}
a{color:#0550ae}
.facts{margin:6px 0 0;color:#57606a;font-size:13px}
.facts span{display:inline-block;margin-right:18px}
main{padding:16px 24px}
.banner{margin:0 0 12px;padding:10px 14px;border-radius:6px;border:1px solid;border-left-width:6px}
.banner.demo{background:#ddf4ff;border-color:#54aeff;color:#0a3069}
.banner.bad{background:#ffebe9;border-color:#cf222e;color:#82071e}
.scroll{overflow-x:auto;max-width:100%;background:#fff;border:1px solid #d0d7de;border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{padding:8px 10px;text-align:left;vertical-align:top;border-bottom:1px solid #d8dee4}
th{font-size:12px;text-transform:uppercase;letter-spacing:.03em;color:#57606a;background:#f6f8fa}
tbody tr:last-child td{border-bottom:0}
tr.bad td{background:#fff5f5}
tr.bad td:first-child{box-shadow:inset 5px 0 0 #cf222e}
tr.wait td:first-child{box-shadow:inset 5px 0 0 #bf8700}
td small{display:block;color:#57606a;font-size:12px}
td small.stale{color:#9a6700}
.name{font-weight:600;display:block;overflow-wrap:anywhere}
.id{font-size:11px;color:#57606a;white-space:nowrap}
.amount{display:block;white-space:nowrap;font-variant-numeric:tabular-nums}
.muted{color:#6e7781}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;font-weight:600;white-space:nowrap;
border:1px solid}
.badge.ok{color:#116329;background:#dafbe1;border-color:#4ac26b}
.badge.bad{color:#82071e;background:#ffebe9;border-color:#cf222e;text-transform:uppercase}
.badge.warn{color:#7d4e00;background:#fff8c5;border-color:#d4a72c;white-space:normal}
.badge.wait{color:#7d4e00;background:#fff8c5;border-color:#d4a72c}
.cell{min-width:8.5em;max-width:24em;overflow-wrap:anywhere}
.endpoints{list-style:none;margin:4px 0 0;padding:0;font-size:12px;color:#57606a;max-width:14em}
.next{margin-top:6px}
.endpoints li.bad{color:#82071e;font-weight:600}
.endpoints li.wait{color:#7d4e00}
.error{overflow-wrap:anywhere;min-width:12em;max-width:34em}
.error+.error{margin-top:6px}
.error code{color:#82071e;font-weight:600}
time,time+small{white-space:nowrap}
@media (max-width:900px){
 header,main{padding:12px}
 .scroll{border:0;background:none;overflow:visible}
 table,tbody,tr,td{display:block;width:100%}
 thead{display:none}
 tr{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin-bottom:12px;overflow:hidden}
 tr.bad{border-color:#cf222e;border-left-width:6px}
 tr.wait{border-left:6px solid #bf8700}
 tr.bad td{background:#fff5f5}
 tr.bad td:first-child,tr.wait td:first-child{box-shadow:none}
 td{display:grid;grid-template-columns:7.5em minmax(0,1fr);gap:8px;border-bottom:1px solid #eaeef2}
 td::before{content:attr(data-label);font-size:12px;text-transform:uppercase;color:#57606a;font-weight:600}
 .error{max-width:none;min-width:0}
 .id{white-space:normal;overflow-wrap:anywhere}
}
"""
