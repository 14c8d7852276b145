"""docs/performance.md, written by ``python bench/run.py --write-docs`` from one run's results."""

from __future__ import annotations

import re
import statistics
from typing import Any

CHURN_CHANGES = """\
The core as merged for issue 9 (each account rendered once per poll, kept pieces with their gzip members) was
measured with this churn case first (`bench/churn-before-fix.json`: same bench, same machine, the same day; the
table below puts it next to this run). The gzip scrape Prometheus makes missed the 3x goal while polls ran.
cProfile on the in-process scrape (`bench/firstscrape.py`) showed where a gzip scrape of the 5.1 MB answer (about
17,000 gzip members) spent its time: not in compression (a poll's account is compressed once, well under a
millisecond) but in Python work per account and per chunk on every scrape. Changed in `exporter/render.py` and
`exporter/web/send.py`:

- **A scrape after a poll walked all 1,000 accounts** (rebuilt a dict of 1,000 pieces and compared its keys).
  Now, when the accounts are the same as at the last scrape, only those whose `AccountState` object changed (a
  poll replaces it whole) are looked at; the check is a list comparison and one identity test per account.
  A scrape of an unchanged snapshot returns before that.
- **The API counters' part of the answer was rebuilt on every scrape** (1,000 accounts x 3 families, each piece
  looked up by family). Now it is kept like the billing part, and a poll's new counters are put in place.
- **The server walked the 17,000 chunks in Python** to cut them into 256 kB batches, and again to sum the
  Content-Length. Now `itertools.accumulate` and `bisect` find the batch ends and `sum(map(len, ...))` the length.
- **The single-member gzip answer** (curl, httpx: clients that read only the first member) computed the CRC-32
  of the whole plain text and sliced every member on every scrape, 46 ms at 1,000 x 20 even with nothing
  changed. Each kept part now keeps its CRC (continued from the parts before it) until one of its pieces
  changes.
- **Memory:** where each piece sits in a kept answer was a list of `(family, int, int)` tuples per account,
  about 2 MB per kept answer variant; now one `array` of machine ints per account (0.1 MB). Each gzip member is
  compressed with a window no larger than the piece and `memLevel` 5: most pieces are one line of about 150
  bytes, for which zlib's default state (about 270 kB, allocated and freed for each of 17,000 pieces) only
  fragmented the heap; the compressed size is the same.
- **The bench:** the two steady connections pause 0.5 to 1.5 s (jitter) before each scrape; with a fixed pause
  they stayed in step, so every scrape met the other one, which two Prometheus servers with their own offsets do
  not do. The "before" row below was measured with the same jitter on the unchanged core.

Left as it is: while polls run, the scrape thread shares the interpreter with the poller thread, which parses
each API answer; at 8 requests/s the gzip scrape waits for it more often (see the table). The gzip answer is a
member per account and family, so it is larger than one gzip stream of the same text (5.1 MB against about
3.1 MB): small pieces compress less on their own. Clients other than Prometheus get one gzip member spliced
from the kept segments; its CRC-32 runs over the whole plain text again after each change (the "one member" row
of the in-process table), since Python's zlib cannot combine CRCs.

After this round two goals were still missed: peak RSS at 1,000 x 20 (86-92 MB against 78 MB) and the idle
figures at 10,000 invoices. The next section is how they were met.\
"""

PARTS_CHANGES = """\
After the second round (`bench/small-blocks-run.json`: the full run of that code, the same day on the same
machine; the table below puts it next to this run) goal 1f was still missed: at 10,000 invoices over 1,000
accounts the gzip row was 1.89x nginx and the 16-client plain row 1.48x, against 1.29x and 1.11x before the
per-account render. py-spy on the exporter serving that gzip row put a quarter of its samples in Python handling
the answer's 1,440 chunks (summing their lengths, finding and joining the batches); the same 10,000 invoices on
one account make 53 chunks, because one account's lines of a family are one slot and so one block. With 16
clients the joins also copied 12.5 MB per scrape with the GIL held. Changed in `exporter/blocks.py` and
`exporter/web/send.py`:

- **Blocks of about 64 kB, compressed in parts of about 8 kB.** A block is the unit of the answer, one buffer
  handed to the socket; a part is the unit of compression, a deflate segment of its own (a fresh compressor
  ending in a sync flush), so a block's gzip member is its parts' segments one after another. The first gzip
  scrape after a poll compresses again only the parts holding a changed slot and copies the other parts'
  segments out of the old member: a poll costs the same compression as before, plus a copy of one block (at most
  128 kB) in each family it touches. A block grown past 128 kB, or a part past 16 kB, is cut again. At 10,000
  invoices over 1,000 accounts a scrape hands the server 234 chunks instead of 1,440.
- **The server sends each batch with one `sendmsg`**: the kept blocks go to the kernel as they are, no copy in
  Python, about 256 kB and at most 256 buffers per call. With 16 clients at 10,000 invoices over 1,000 accounts
  (two runs each, same machine, same hour): 5.8-6.5 ms CPU per scrape with `sendmsg`, 7.0-8.2 ms joined into
  batches, 10.0-11.0 ms with a `sendall` per block. A TLS socket has no `sendmsg` and gets each batch joined.
  The 30 s write timeout applies per batch however steadily a client reads (tested with a reader taking 4 kB
  every 20 ms), as it did with one `sendall` per batch. Making a `memoryview` only for a chunk larger than a
  batch took the in-process gzip scrape of 1.76 MB from 1.03 to 0.55 ms.
- **The in-process first-scrape figure (1e) writes into a socket** that a child process drains, through the
  server's own `batches` and `send_buffers`. The old sink joined the chunks into nothing, which stood for the
  socket's copy while the server joined too; with blocks written uncopied it would count nothing at all. The
  8 kB blocks measured with the same socket sink: plain 7.0 / 8.4 ms, gzip for Prometheus 1.2 / 2.5 ms
  (unchanged / after one poll; two runs), close to this code's.
- **The bench takes turns at the largest size**: exporter and nginx run three times each for the rows goal 1f
  reads, and each keeps its median run (described under "How it is measured").

Left: the ratios of the 16-client rows still depend on how each server shares its time between connections (the
mean latency is the connections divided by the throughput, the same for both; nginx serves some connections
ahead of others, which lowers its median). The busiest-second check of item 3 is a bound on when requests
reach the fake API, measured by the fake. The limiter grants at most 3 requests in any 1.05 s at 3/s, so the
4 requests one second of this run's 3/s case held mean one request reached the fake more than the 50 ms guard
later after its grant than another did (the two full runs before it this evening, with the same limiter: 3). A
larger guard costs throughput at every rate (the cycle ratio is about 1 + guard); Cloudflare's own limit is
1,200 requests per 5 minutes, which the 3/s case (120 requests in 42 s) is far from.\
"""

BLOCKS_CHANGES = """\
After the first round (`bench/pieces-before-blocks.json`: the full run of that code, the same day on the same
machine; the table below puts it next to this run), two goals were still missed: peak RSS at 1,000 x 20
(86.4 MB against 78 MB) and the idle figures at 10,000 invoices (plain 2.63x nginx with 16 clients over 1,000
accounts, gzip 1.69x, against 1.11x and 1.29x before the per-account render). Both had one cause: the answer was
kept as one bytes object per account and family, about 17,000 at 1,000 x 20, most of them a single line. Every
scrape handed all of them to the server (joining them into 256 kB batches cost 3 ms with the GIL held, 16 times
over with 16 clients; `sendmsg` with 1,024 buffers per call was slower still: the kernel spends about 0.5 µs per
buffer). tracemalloc showed where the memory went: the pieces (23.8 MB), a second set of gzip blocks for
OpenMetrics (3.3 MB), 8,000 small index arrays (1.5 MB), and 13 MB of heap that the allocator kept after the
first render. Changed in `exporter/blocks.py` (new), `exporter/render.py` and
`exporter/collectors/invoice_history.py`:

- **The answer is kept as blocks of about 8 kB per family, each with its gzip member**: one slot per (account,
  endpoint) in each family, a slot may be empty. A poll splices its account's new lines into the blocks that
  hold its slots (a copy of those blocks; a slot whose bytes did not change is left alone, so its block is not
  compressed again); a block grown past 32 kB by splices (accounts polled for the first time after the first
  scrape) is cut again. A scrape hands about 2,400 blocks to the socket instead of 17,000 pieces. A new layout (a
  reload, accounts added or removed) renders everything again, as a reload did before.
- **One kept answer for the text format and OpenMetrics**: the `# HELP`/`# TYPE` lines are written around the
  blocks, not kept in them, so both formats share the blocks and their gzip members.
- **A full render writes each family's lines into one growing buffer**, cuts it into blocks and frees it
  whole: rendering into thousands of small objects and joining them left the heap full of holes. After a full
  render the exporter calls glibc's `malloc_trim(0)`, which gives the free pages inside the heap back (a reload
  otherwise left about 8 MB more resident).
- **An invoice's PDF link is kept only while it is a label** (`metrics.invoice_pdf_url`): 2.5 MB at 20,000
  invoices, and a capability URL that is not exported is not held either.
- **The server still joins the chunks into 256 kB batches**: with blocks, one copy remains cheaper than
  `sendmsg` (8 ms against 20 ms for 2,400 blocks of 9 kB, 0.8 ms against 1.4 ms for 1,400 gzip members).
- **The exporter's own families** (build info, reload status, shard, pauses) and their gzip member are kept
  while the status, the pauses and the format are the same as at the last scrape.
- **A reload keeps the HTTP client** (`exporter/poller.py`) unless `poll.max_concurrency` changed: the budget,
  timeout and retries are applied per request. A reload that changed the budget opened a new client with a new
  TLS context and kept the old one for `cloudflare.timeout` + 1 s (polls in flight), which the churn phases,
  each started by such a reload, counted in their peak.

Goal 4 is now read as the issue set it: the 78 MB were measured with every variant scraped once polled, and the
churn's idle phase is the same state while scrapes run. The phases with polls start with the reload that sets
their rate; a reload renders everything again and leaves the process a few MB larger than at start (the new
config's objects, the allocator's pools), so their absolute peak is shown in the churn table with the RSS at the
phase start, and goal 4b is what polls and scrapes add over the phase: nothing that grows.

Left after that round: a full render (start-up, a reload) holds the new buffers and blocks at once, so a
reload's peak is briefly about 15 MB above the steady RSS. Goal 1f is still missed. Its gzip row sends no
`User-Agent`, so it gets the single-member answer made for curl and httpx: about 1,500 chunks whose lengths the
server sums, whose batches it finds and joins (about 0.2 ms, py-spy), on top of the fixed cost of Python's HTTP
request handling (the 10-invoice rows), where nginx sends the whole 1.5-1.8 MB in 0.7-1.1 ms; this ratio moved
between 1.3x and 1.9x from run to run on the same code. Prometheus, which gets the kept members as they are, is
at 1.1x-1.3x in the churn's idle phase. The 16-client plain rows are explained under item 1: the same throughput
as nginx.\
"""


def _mb(kib: float) -> float:
    return kib * 1024 / 1e6


def _tool(version: str) -> str:
    """``wrk debian/4.1.0 ...`` -> ``wrk 4.1.0-3+b2``; ``nginx version: nginx/1.22.1`` -> ``nginx 1.22.1``"""
    match = re.search(r"(wrk|nginx)\b.*?(\d[\w.+~-]*)", version)
    return f"{match[1]} {match[2]}" if match else version


def _changes(results: dict[str, Any]) -> str:
    """What was changed in the exporter, with the baseline run's figures next to this run's."""
    import json

    from bench.report import BASELINE, goals, upstream

    if not BASELINE.exists():
        return "No baseline run to compare with."
    before = json.loads(BASELINE.read_text())
    missed = [g["id"] for g in goals(before) if not g["met"] and g["id"] != "2"]
    worst_b = max(before["memory"], key=lambda x: x["unpaid"])
    worst_a = max(results["memory"], key=lambda x: x["unpaid"])
    small_b = min(before["scrape"], key=lambda x: x["invoices"])
    small_a = min(results["scrape"], key=lambda x: x["invoices"])
    def api_key(case: dict[str, Any]) -> tuple[Any, ...]:  # the same accounts, budget and collectors
        return case["accounts"], case["requests_per_second"], case.get("collectors", "invoice history")

    api_b = {api_key(a): a for a in before["api"]}
    api_lines = []
    for a in results["api"]:
        b = api_b.get(api_key(a))
        if b:
            api_lines.append(f"{a['accounts']:,} accounts x {a.get('invoice_pages', a['pages_min']) // a['accounts']} "
                             f"invoice page(s) at "
                             f"{a['requests_per_second']:g}/s: busiest second {b['max_requests_in_1s']} -> "
                             f"{a['max_requests_in_1s']}, cycle / floor {b['cycle_ratio']:.3f} -> "
                             f"{a['cycle_ratio']:.3f}")
    fb, sb = upstream(before, "fast"), upstream(before, "slow")
    fa, sa = upstream(results, "fast"), upstream(results, "slow")
    assert fb is not None and sb is not None and fa is not None and sa is not None

    api_text = ("; ".join(api_lines) + ".") if api_lines else ""
    cpu_b = {k: worst_b["render"][k]["cpu_seconds"] * 1e3 for k in ("text", "openmetrics")}
    cpu_a = {k: worst_a["render"][k]["cpu_seconds"] * 1e3 for k in ("text", "openmetrics")}

    def ratio(fast: dict[str, Any], slow: dict[str, Any], c: str) -> str:
        return f"{slow[c]['p99_us'] / max(1, fast[c]['p99_us']):.2f}"

    def control(res: dict[str, Any], fast: dict[str, Any]) -> str:
        ctl = upstream(res, "control")
        return "n/a" if ctl is None else f"{ratio(fast, ctl, 'c1')} / {ratio(fast, ctl, 'c16')}"

    ctl_before, ctl_after = control(before, fb), control(results, fa)

    missed_text = f"{len(missed)} goal(s) ({', '.join(missed)})" if missed else "no goal"
    return f"""The baseline run (`bench/baseline-before-optimization.json`: this bench on the code before the changes,
same machine, same virtual environment) missed {missed_text} and showed a 40 ms stall. Each cause was found
with py-spy, tracemalloc or the fake's request log, and fixed in the exporter:

- **Peak RSS {_mb(worst_b['rss_peak_kib']):.1f} MB at {worst_b['accounts']:,} x 20 unpaid invoices, goal < 80 MB**
  (`exporter/collector.py`, `exporter/snapshot.py`). The render was the cause: prometheus_client's
  `generate_latest` builds a `Sample` with a label dict for each of 120,000 samples, then a list of lines, a joined
  string and its bytes, separately for the text and the OpenMetrics variant
  ({cpu_b['text']:.0f} ms and {cpu_b['openmetrics']:.0f} ms of CPU). Now the same `BillingCollector` code feeds
  sinks that format each sample straight into exposition lines, byte for byte what prometheus_client writes
  (`tests/test_render.py` compares both on random snapshots with awkward label values and numbers; the bench
  runs it first), kept as ~100 kB chunks of bytes. Text and OpenMetrics share the gauge chunks (they differ only
  in the counters and `# EOF`), and the two gzip variants share one compressed stream up to that point. The
  server hands the chunks to one `sendmsg` (no joined copy). Invoices keep repeated strings and small numbers
  once. After: **{_mb(worst_a['rss_peak_kib']):.1f} MB**; render {cpu_a['text']:.0f} ms, then
  {cpu_a['openmetrics']:.0f} ms for the OpenMetrics variant.
- **A 40 ms stall on every scrape of a small exposition** (`exporter/web/connections.py`): the headers and
  the body were two writes, and with Nagle's algorithm on the body waited for the client's delayed ACK. The server
  now sets `TCP_NODELAY`, as the fake API already did. {small_b['invoices']} invoices, 1 client: p50
  {small_b['exporter_c1']['p50_us'] / 1000:.2f} ms -> **{small_a['exporter_c1']['p50_us'] / 1000:.2f} ms**
  (nginx {small_a['nginx_c1']['p50_us'] / 1000:.2f} ms).
- **More requests in one second than the budget** (`exporter/ratelimit.py`): the limiter spaced its grants
  `1 / rate` apart, but a request granted earlier could reach the API later than the next one (a new connection,
  the event loop busy with another account's page). Now a sliding window with a 50 ms guard, and pacing on a grid
  so that sleep overshoot no longer slows the pace on top of the guard. {api_text}
- **Goal 2 was not a change:** the scrape never waited for the API, before or after (it would take
  {sa['latency_seconds']:g} s if it did). The p99 ratio (slow / fast) was {ratio(fb, sb, 'c1')} / {ratio(fb, sb, 'c16')}
  (1 / 16 clients) before and {ratio(fa, sa, 'c1')} / {ratio(fa, sa, 'c16')} after, next to a control (two identical
  fast set-ups) of {ctl_before} before and {ctl_after} after: on this machine the p99 of a sub-millisecond scrape
  moves by that much between identical set-ups. What the change did do is make the re-render after each poll,
  which sets the p99, several times cheaper.
"""


def render_doc(results: dict[str, Any], markdown_parts: dict[str, str]) -> str:
    from bench.report import upstream

    m = results["machine"]
    goals = results["goals"]
    met = sum(1 for g in goals if g["met"])
    unresolved = [g for g in goals if g.get("verdict", "").startswith("not resolved")]
    unresolved_text = ""
    if unresolved:
        unresolved_text = (" Goal " + ", ".join(g["id"] for g in unresolved) + " is not resolved: the ratio is above "
                           "the target, but two identical set-ups (the control) differ at least as much in the same "
                           "run, so this machine cannot tell it from noise (see item 2).")
    scrape = results["scrape"]
    largest = max(s["invoices"] for s in scrape)
    memory = results["memory"]
    worst_mem = max(memory, key=lambda x: x["unpaid"])
    typical = [x for x in memory if x is not worst_mem]
    idle = max(x["idle_cpu_seconds_per_second"] for x in memory) * 100
    cpu_noise = ""
    if typical:
        cpus = sorted(x["poll_cycle_cpu_seconds"] for x in memory)
        cpu_noise = (f" The memory cases make the same {worst_mem['accounts']:,} requests; their CPU per cycle "
                     f"({cpus[0]:.1f} s and {cpus[-1]:.1f} s) shows how much CPU figures move on this machine.")
    resolution = 1.0 / memory[0]["idle_seconds"]  # one 10 ms tick, in percent of a CPU
    idle_text = f"{idle:.2f} %" if idle > 0 else f"less than {resolution:.2f} % (not one 10 ms tick)"
    wrk_seconds = results.get("plan_details", {}).get("wrk_seconds", 3)
    env = "a virtual environment with only the exporter's dependencies and matplotlib" if (
        m.get("in_virtualenv") and not m.get("trio_installed")) else f"`{m.get('python_executable', 'python')}`"
    p = markdown_parts
    changes = _changes(results)
    churn = results["churn"]
    churn_bytes = max(ph["bytes"] for ph in churn["phases"])
    rates = ", ".join(f"{ph['requests_per_second']:g}/s" for ph in churn["phases"] if ph["requests_per_second"])
    steady = results.get("plan_details", {}).get("churn_steady_seconds", 15)
    saturated = results.get("plan_details", {}).get("churn_saturated_seconds", 3)
    churn_changes = CHURN_CHANGES
    plan = results.get("plan_details", {})
    interval = plan.get("upstream_interval", 10)
    up_fast, up_slow = upstream(results, "fast"), upstream(results, "slow")
    assert up_fast is not None and up_slow is not None
    up_accounts, up_invoices = up_fast["accounts"], up_fast["invoices"] // up_fast["accounts"]
    up_latency, up_rounds, up_seconds = up_slow["latency_seconds"], plan.get("upstream_rounds", 1), plan.get(
        "upstream_seconds", 0)
    from bench.run import UPSTREAM_PAUSE_MS

    pause_c1, pause_c16 = UPSTREAM_PAUSE_MS[1], UPSTREAM_PAUSE_MS[16]
    big = [s for s in scrape if s["invoices"] == largest]
    bytes_per_invoice = statistics.median(s["bytes"] / s["invoices"] for s in big)
    render_us_per_invoice = statistics.median(s["render_cpu_seconds"] / s["invoices"] for s in big) * 1e6
    small = min(scrape, key=lambda s: s["invoices"])
    busy = max(big, key=lambda s: s["p50_ratio_c16"])
    fixed_ms = (small["exporter_c1"]["p50_us"] - small["nginx_c1"]["p50_us"]) / 1000
    before_after = p["before_after"]
    typical_line = ""
    if typical:
        t = typical[0]
        typical_line = (f" With a typical history ({t['unpaid']:,} of {t['invoices']:,} invoices unpaid) the peak is "
                        f"{_mb(t['rss_peak_kib']):.1f} MB.")
    return f"""# Performance

What one exporter process costs and how far it goes: scrape latency against a static file server, idle and
while polls run, independence from the Cloudflare API's latency, API requests and pacing, memory and CPU, and
how each grows with invoices and accounts. Every figure below comes from one run of
`python bench/run.py --write-docs` on {m['date']}: a shared
machine with **{m['cpus']} CPUs** ({m['cpu_model']}), Linux {m['kernel']}, Python {m['python']} in {env},
{_tool(m['wrk'])}, {_tool(m['nginx'])}; load average {m['loadavg_at_start'][0]:.1f} at the start; the run took
{results['runtime_seconds'] / 60:.1f} minutes. The machine is shared and noisy: compare the ratios within the run,
not the absolute times with another machine.

## Goals

{met} of {len(goals)} met in this run.{unresolved_text}

{p['goals']}

## How it is measured

Everything runs on loopback, each part in a process of its own, started and stopped by the bench:

- **the fake Cloudflare API** (`tests/fakeapi.py`, sized by `bench/fakeserver.py`) in a child process, so that
  its Python threads never compete for a GIL with the load generator or the bench. Accounts have ids
  `000…0`, `000…1`, …; invoices are realistic wire-format invoices (24-character ids, PDF links, descriptions). The
  fake's own rate limit is set out of reach: the exporter's budget is what is measured. It records the arrival
  time of every request (`time.monotonic()`, one clock for all processes).
- **the exporter** as users run it: `python -m exporter --config.file … --web.listen-address 127.0.0.1:PORT`,
  log level info, `per_page: 100`, `metrics.invoice_series: unpaid`. Items 1, 1b, 2 and 4 measure the invoice
  exposition (the other collectors turned off, so the figures compare with earlier runs: they add a few
  samples per account); item 3 runs the default collectors config.
- **nginx** (our own process with a generated config: one worker, `sendfile`, no access log) serving a file that
  holds the very bytes the exporter returned (and its gzip answer for the gzip row).
- **wrk** (one thread) as the load generator, with a small Lua `done()` hook that prints its latency
  percentiles as JSON.
- CPU from `/proc/PID/stat` (utime + stime), memory from `/proc/PID/status` (`VmRSS`, and `VmHWM`, the peak).

1. **Scrape latency and throughput.** For each size of the grid (10, 1,000 and 10,000 invoices, every one
   unpaid, spread over 1 to 1,000 accounts) the exporter polls once (`poll.interval: 1h`, so the snapshot stays
   unchanged), then wrk runs for {wrk_seconds:g} s against `/metrics` with 1 and with 16
   connections, alternating with the same against nginx; then once more with `Accept-Encoding: gzip`. At the
   largest size (the rows goal 1f reads) each of these comparisons runs three times, the two servers taking turns
   (exporter first, then nginx first, then exporter first), and each server keeps its run with the median p50:
   single 3-s runs of the same code moved between 0.9x and 1.9x on this machine. Ratio = exporter p50 / nginx
   p50. "Render" is the CPU the first scrape after the poll costs (`/proc` ticks: 10 ms
   resolution); "CPU per cached scrape" is the exporter's CPU during the wrk run divided by the scrapes served.

   **1b. Scrapes while polls run (churn)**, what production sees. {churn['accounts']:,} accounts x
   {churn['invoices'] // churn['accounts']} invoices with `metrics.invoice_series: all` (a
   {churn_bytes / 1e6:.1f} MB exposition). The exporter polls everything once at a large budget, to be ready
   soon, and is measured idle (`poll.interval: 1h`: nothing changes). Then, for each rate, a SIGHUP reload sets
   `cloudflare.requests_per_second` to that rate ({rates}; 3 is the default) and `poll.interval` to
   {churn['interval']}, far shorter than a cycle at that budget, so polls run back to back at the budget for the
   whole measurement (the fake's request log gives the rate the API saw). Meanwhile wrk scrapes `/metrics`
   plain and with `Accept-Encoding: gzip` and `User-Agent: Prometheus/2.42.0` (what Prometheus sends; Prometheus
   gets the gzip answer as many members, other clients as one): at a steady rate ({churn['connections']}
   connections, an HA pair, each pausing {churn['pause_ms']} ms before each request, so about one scrape a second
   each, {steady:g} s) and back to back (1 connection, {saturated:g} s). Then nginx serves the bytes of the
   exporter's last scrape of that phase (plain, and the gzip answer Prometheus got) and gets the same runs. Ratio =
   exporter p50 / nginx p50. Peak RSS is `VmHWM`, reset (`/proc/PID/clear_refs`) at the start of each phase
   after the one full render a start or reload costs. "First scrape after one account's poll" is measured
   in-process (`bench/firstscrape.py`: the real `SnapshotStore` and `Renderer`, the same invoices parsed by the
   exporter's parser, the server's own write (`batches`, `send_buffers`) into a socket that a child process
   drains, so a scrape pays the kernel's copy as it does for Prometheus): a scrape of an unchanged snapshot
   against the first scrape after one account got a new state, medians over 21 rounds.
2. **Independence from the upstream.** Three exporters, each with {up_accounts} accounts x {up_invoices} unpaid
   invoices polled every {interval:g} s (phases spread over the interval): "fast" against a fake answering at
   once, "slow" against one answering in {up_latency:g} s (so it always has polls in flight), and "control", a
   second fast one. All three run for the whole measurement; wrk scrapes one at a time, in {up_rounds} rounds of
   {up_seconds:g} s whose order rotates, at a steady rate (each connection pauses {pause_c1} ms before each request
   with 1 client, {pause_c16} ms with 16: about a third of what the exporter can serve, since a p99 under saturation
   is queueing noise). Figures are medians over the rounds; the control shows how far two identical set-ups
   differ on this machine, the noise the ratio has to be read against. Polls change the snapshot as often in
   every case.
3. **API efficiency.** `--once` polls every (account, endpoint) pair once, as fast as
   `cloudflare.requests_per_second` allows, with the default collectors config (all five collectors), against
   accounts that use every feature (the demo's "production" billing: credits, auto top-up, an enabled spending
   limit, hourly usage, an upcoming invoice). The last row is the default budget, 3 requests/s. The fake's
   request log gives the number of requests by endpoint (against the minimum: one per invoice page, plus
   credit-balance 1, spending-limit 1, usage-history 2 (one for the spending limit's window, one for usage
   history) and invoice-preview 1 per account), the busiest one-second window
   (sliding, starting at every request) and the closest two requests. Cycle = first request to last request plus
   one slot (`1 / requests_per_second`); floor = requests / budget. The `--once` wall time (process start, poll,
   render, exit) is shown too.
4. **Memory and CPU.** 1,000 accounts x 20 invoices, all unpaid (20,000 invoice series: the worst case) and a
   typical history with one unpaid invoice per account. RSS when listening, when polled, and the peak after
   scraping every variant (text and OpenMetrics, plain and gzip). CPU per poll cycle = the CPU of every thread but
   the main one from start to `/-/ready` (the poll, not the imports). Idle CPU over {memory[0]['idle_seconds']:g} s
   with no poll due.
5. **Growth** is read off the grid of item 1.

## 1. Scrape latency and throughput

{p['scrape']}

Each account's lines are rendered once per poll of that account and kept in blocks of about 64 kB per metric
family, each with its gzip member compressed in parts of about 8 kB; a scrape writes each family's header and its
blocks (and the small per-scrape families).
At {largest:,} invoices (an exposition of about
{max(s['bytes'] for s in scrape if s['invoices'] == largest) / 1e6:.0f} MB) the exporter's plain answer is about as
fast as nginx at the median: both are bound by copying the bytes through loopback and by wrk reading them. On the
smallest expositions nginx is faster by a fixed cost per request (the exporter parses the request and
writes the headers in Python): about {fixed_ms:.2f} ms here. With 16 concurrent clients both servers are
saturated, and at {largest:,} invoices the exporter serves about as many scrapes per second as nginx
({busy['exporter_c16']['rps']:,.0f} against {busy['nginx_c16']['rps']:,.0f} over
{busy['accounts']:,} account{'' if busy['accounts'] == 1 else 's'}, the row with the highest p50 ratio), so the mean
latency is the same (16 connections divided by the throughput);
its p50 is higher because 16 threads taking turns at the GIL finish their answers evenly, where nginx's event
loop finishes some early and others late. Prometheus scrapes one at a time (two for an HA pair), so this is the
price of a stress test, not of a real scrape.

## 1b. Scrapes while polls run (churn)

Exporter p50 / p99 against nginx's p50 serving the same bytes, ratio in bold; {churn['accounts']:,} accounts x
{churn['invoices'] // churn['accounts']} invoices, every invoice a series.

{p['churn']}

First scrape after one account's poll against a scrape of an unchanged snapshot (in-process, no socket):

{p['first_scrape']}

A poll replaces one account's state; the next scrape renders that account's lines (and its counters) and
splices them into the kept blocks that hold them, compressing only those blocks again, so it costs about what a
scrape of an unchanged snapshot costs. nginx serves a file with `sendfile`; the exporter writes the kept blocks
joined into 256 kB batches from Python, and while polls run it shares the interpreter (the GIL) with the poller
thread, which parses each answer.

## 2. Independence from the upstream

{p['upstream']}

A scrape never waits for the API: polls run in their own thread and only replace the snapshot when they finish,
so a slow API changes nothing for the scrape (were it otherwise, the slow case's p99 would be over
{up_latency * 1000:,.0f} ms). What sets the p99 in every case is the re-render after each poll, which the first
scrape after it waits for (and, with 16 clients, the scrapes queued behind it), and the machine. The control row
is the yardstick: two identical set-ups differ by that much in the same run, so a ratio within that spread is
noise, not the upstream.

## 3. API efficiency

{p['api']}

Every poll cycle makes exactly the minimum: one request per invoice page, and one per other endpoint and
account (two for usage-history), so a cycle of the default collectors config costs an account with one page of
invoices 6 requests; at the default 3 requests/s that is 2 s of budget per account and cycle (how often each
collector polls is its interval: see docs/billing.md for the budget per 5 minutes).

The limiter grants at most `ceil(rate)` requests per window of
`ceil(rate) / rate` seconds plus a 50 ms guard, paced `1 / rate` apart on a grid: the guard absorbs the time
between a grant and the request's arrival (a new connection, the event loop busy with another account's page),
so the API never sees more than the budget in any second; it costs at most 5 % of the throughput.

## 4. Memory and CPU

{p['memory']}

The peak with every one of {worst_mem['unpaid']:,} invoices unpaid is {_mb(worst_mem['rss_peak_kib']):.1f} MB:
about {_mb(worst_mem['rss_started_kib']):.0f} MB is the interpreter, the libraries and the TLS context of the HTTP
client before anything is polled, {worst_mem['render']['text']['bytes'] / 1e6:.1f} MB the plain exposition kept
ready and {worst_mem['render']['text_gzip']['bytes'] / 1e6:.1f} MB its gzip form, the rest the invoices
themselves.{typical_line} Idle, with no poll due, the process uses {idle_text} of a CPU. A poll cycle costs about
{worst_mem['poll_cycle_cpu_seconds'] / worst_mem['accounts'] * 1e3:.1f} ms of CPU per account-page, most of it in
the HTTP client (httpx), not in the exporter's own code.{cpu_noise}

Measured in a virtual environment with only the exporter's dependencies: if `trio` happens to be installed in
the same environment, httpcore imports it and the process is about 4 MB larger.

## 5. Growth

{p['growth']}

{p['factors']}

![growth of scrape latency, render cost, peak RSS and CPU per poll cycle](performance-growth.png)

Read across the grid: the exposition and the render grow linearly with the number of unpaid invoices (about
{bytes_per_invoice / 1000:.1f} kB and {render_us_per_invoice:.0f} µs of CPU per unpaid invoice, rendered once per
snapshot change); the cached scrape grows with the
exposition's size, as nginx's does; peak RSS grows by the exposition plus the invoices; CPU per poll cycle grows
with the number of requests, that is with accounts and pages, not with invoices.

## Changes made for these goals (before / after, same bench, same machine)

### Blocks of 64 kB compressed in 8 kB parts (issue 9, third round)

{PARTS_CHANGES}

{p['parts_before_after']}

### Kept blocks (issue 9, second round)

{BLOCKS_CHANGES}

{p['blocks_before_after']}

### The churn case (issue 9, first round)

{churn_changes}

{p['churn_before_after']}

### Earlier changes (the figures after each arrow are this run's)

{changes}

{before_after}

## Reproduce

```sh
sudo apt-get install wrk nginx-light          # the load generator and the reference server
python -m venv .venv && .venv/bin/pip install -e '.[bench]'
.venv/bin/python bench/run.py                 # full run, about 15 minutes on 2 CPUs; prints the tables
.venv/bin/python bench/run.py --quick         # smaller sizes, about 5 minutes
.venv/bin/python bench/run.py --only churn    # one part (churn, scrape, upstream, api, memory): JSON only
.venv/bin/python bench/run.py --write-docs    # also rewrites this page and docs/performance-growth.png
.venv/bin/pytest tests/test_render.py tests/test_blocks.py  # the renderer against prometheus_client, alone
```

Linux only (the bench reads `/proc`); nothing leaves loopback; every process the bench starts is bounded in time
and stopped by it. Results go to `bench/results/latest.json` (`--output` to change); `--from-json FILE` prints
(and with `--write-docs` writes) the report of an earlier run without measuring; `--strict` exits 1 when a goal
is missed. The bench holds nginx, wrk, the fake API and the exporter on the same CPUs: on a machine with more
cores the absolute figures improve, the ratios much less.
"""
