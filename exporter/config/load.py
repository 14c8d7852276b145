"""Load and validate the YAML config file into a ``Config``.

Every problem is collected (not just the first) and reported as ``path: key: what is wrong``. The file and
everything it expands to are bounded (docs/limits.md). The ``collectors:`` section is derived from the
collector registry: each collector's settings class declares its keys, defaults and bounds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from exporter.collectors import REGISTRY
from exporter.config.files import FileProblem, parse_yaml, read_text_file
from exporter.config.model import (
    DEFAULT_BASE_URL,
    AccountConfig,
    CloudflareConfig,
    CollectorSettings,
    Config,
    ConfigError,
    Credentials,
    DiscoveryConfig,
    Inherited,
    MetricsConfig,
    PollConfig,
    ShardingConfig,
)
from exporter.config.secrets import CREDENTIAL_KEYS, credentials, credentials_from_env
from exporter.config.values import (
    AMOUNT_DIVISOR,
    INTERVAL,
    MAX_CONCURRENCY,
    MAX_PAGES,
    MAX_RETRIES,
    PER_PAGE,
    REQUESTS_PER_SECOND,
    SHARD,
    TIMEOUT,
    TOTAL_SHARDS,
    account_id,
    base_url,
    boolean,
    one_of,
    regex_list,
    show,
    string,
)
from exporter.config.walker import TooBig, Walker

MAX_CONFIG_FILE_BYTES = 1 << 20  # 1 MiB: some 10,000 accounts
INVOICE_TYPES = ("auto", "manual", "all")
INVOICE_SERIES = ("unpaid", "all", "none")


def default_collectors(inherited: Inherited | None = None, **changes: Mapping[str, Any]
                       ) -> dict[str, CollectorSettings]:
    """Every registered collector's default settings (a config file that leaves ``collectors:`` out), with
    ``changes`` per collector name applied: for configs built in code (the demo, tests)."""
    settings = {c.name: c.settings_type.defaults(inherited or Inherited()) for c in REGISTRY}
    unknown = set(changes) - set(settings)
    if unknown:
        raise ValueError(f"unknown collectors {sorted(unknown)}")
    return {name: replace(s, **changes.get(name, {})) for name, s in settings.items()}


def parse_config(raw: Any, source: str = "config", environ: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML document; raise ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    walk = Walker(env)
    try:
        doc = walk.expand(raw)
    except TooBig as err:
        raise ConfigError(source, [str(err)]) from None
    top = walk.section(doc, "", ("cloudflare", "poll", "accounts", "discovery", "metrics", "sharding",
                                 "collectors"))

    cf_doc = walk.section(top.get("cloudflare"), "cloudflare", (
        "base_url", "timeout", "requests_per_second", "graphql_queries_per_second", "max_retries", "per_page",
        "max_pages", *CREDENTIAL_KEYS,
    ))
    global_creds, global_broken = credentials(walk, cf_doc, "cloudflare")
    if global_creds is None and not global_broken and not any(cf_doc.get(k) for k in CREDENTIAL_KEYS):
        before = len(walk.problems)
        global_creds = credentials_from_env(walk, env)
        global_broken = len(walk.problems) > before
    cloudflare = CloudflareConfig(
        base_url=walk.value(cf_doc, "cloudflare", "base_url", base_url, DEFAULT_BASE_URL),
        timeout=walk.value(cf_doc, "cloudflare", "timeout", TIMEOUT, 10.0),
        requests_per_second=walk.value(cf_doc, "cloudflare", "requests_per_second", REQUESTS_PER_SECOND, 3.0),
        graphql_queries_per_second=walk.value(cf_doc, "cloudflare", "graphql_queries_per_second",
                                              REQUESTS_PER_SECOND, 1.0),
        max_retries=walk.value(cf_doc, "cloudflare", "max_retries", MAX_RETRIES, 3),
        per_page=walk.value(cf_doc, "cloudflare", "per_page", PER_PAGE, None),
        max_pages=walk.value(cf_doc, "cloudflare", "max_pages", MAX_PAGES, 100),
        credentials=global_creds,
    )

    poll_doc = walk.section(top.get("poll"), "poll", ("interval", "max_concurrency"))
    poll = PollConfig(
        interval=walk.value(poll_doc, "poll", "interval", INTERVAL, 300.0),
        max_concurrency=walk.value(poll_doc, "poll", "max_concurrency", MAX_CONCURRENCY, 8),
    )

    accounts = _parse_accounts(walk, top.get("accounts"), global_creds, global_broken)

    disc_doc = walk.section(top.get("discovery"), "discovery", ("enabled", "include", "exclude"))
    discovery = DiscoveryConfig(
        enabled=walk.value(disc_doc, "discovery", "enabled", boolean, False),
        include=walk.value(disc_doc, "discovery", "include", regex_list, ()),
        exclude=walk.value(disc_doc, "discovery", "exclude", regex_list, ()),
    )
    if discovery.enabled and global_creds is None and not global_broken:
        walk.problems.append(
            "discovery.enabled: discovery needs credentials in the cloudflare section "
            "(or CLOUDFLARE_API_TOKEN in the environment)"
        )
    if not accounts and not discovery.enabled and not walk.problems:
        walk.problems.append("accounts: no accounts listed and discovery is disabled: nothing to poll")

    met_doc = walk.section(top.get("metrics"), "metrics", ("amount_divisor", "invoice_series", "invoice_pdf_url"))
    metrics = MetricsConfig(
        amount_divisor=walk.value(met_doc, "metrics", "amount_divisor", AMOUNT_DIVISOR, 100.0),
        invoice_series=walk.value(met_doc, "metrics", "invoice_series", one_of(INVOICE_SERIES), "unpaid"),
        invoice_pdf_url=walk.value(met_doc, "metrics", "invoice_pdf_url", boolean, False),
    )

    shard_doc = walk.section(top.get("sharding"), "sharding", ("shard", "total_shards"))
    sharding = ShardingConfig(
        shard=walk.value(shard_doc, "sharding", "shard", SHARD, 0),
        total_shards=walk.value(shard_doc, "sharding", "total_shards", TOTAL_SHARDS, 1),
    )
    if sharding.shard >= sharding.total_shards:
        walk.problems.append(
            f"sharding.shard: must be below total_shards ({sharding.total_shards}), got {sharding.shard}"
        )

    collectors = _parse_collectors(walk, top.get("collectors"), Inherited(poll.interval, metrics.amount_divisor))

    if walk.problems:
        raise ConfigError(source, walk.problems)
    return Config(cloudflare, poll, accounts, discovery, metrics, sharding, collectors, tuple(walk.warnings))


def _parse_accounts(walk: Walker, doc: Any, global_creds: Credentials | None,
                    global_broken: bool) -> tuple[AccountConfig, ...]:
    if doc is None:
        return ()
    if not isinstance(doc, list):
        walk.problems.append(f"accounts: expected a list, got {type(doc).__name__}")
        return ()
    accounts: list[AccountConfig] = []
    seen_ids: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    without_credentials: list[str] = []
    for index, entry in enumerate(doc):
        path = f"accounts[{index}]"
        if isinstance(entry, str):
            entry = {"id": entry}
        item = walk.section(entry, path, ("id", "name", "type", *CREDENTIAL_KEYS))
        # Every field is checked, whatever else is wrong with this entry: all problems at once.
        found_id: str | None = None
        if "id" not in item:
            walk.problems.append(f"{path}.id: missing")
        else:
            found_id = walk.value(item, path, "id", account_id, None)
        if found_id is not None and found_id != found_id.lower():
            found_id = found_id.lower()
            walk.warnings.append(f"{path}.id: upper-case letters changed to lower case ({found_id}), as "
                                 "Cloudflare writes account ids and as the account_id label carries them")
        if found_id is not None and found_id in seen_ids:
            walk.problems.append(f"{path}.id: duplicate account {found_id} (also accounts[{seen_ids[found_id]}])")
            found_id = None
        elif found_id is not None:
            seen_ids[found_id] = index
        creds, broken = credentials(walk, item, path)
        name = walk.value(item, path, "name", string, None) or found_id
        account_type = walk.value(item, path, "type", one_of(INVOICE_TYPES), "all")
        if name is not None and name in seen_names:
            walk.problems.append(f"{path}.name: {show(name)} is also the name of accounts[{seen_names[name]}]: "
                                 "the account label would not tell them apart; give each account its own name")
        elif name is not None:
            seen_names[name] = index
        if creds is None and not broken:
            creds = global_creds
            if creds is None and not global_broken:
                without_credentials.append(path)
        if found_id is not None and name is not None and creds is not None:
            accounts.append(AccountConfig(id=found_id, name=name, type=account_type, credentials=creds))
    if without_credentials:  # one cause (no credentials anywhere), one message, however many accounts
        walk.problems.append(
            f"{', '.join(without_credentials)}: no credentials: set cloudflare.api_token (or api_token_file, or "
            "api_email + api_key), the same per account, or CLOUDFLARE_API_TOKEN in the environment"
        )
    return tuple(accounts)


def _parse_collectors(walk: Walker, doc: Any, inherited: Inherited) -> dict[str, CollectorSettings]:
    """The ``collectors:`` section: one mapping per registered collector, its keys those its settings class
    declares. A key left out takes the collector's default (some follow poll.interval or
    metrics.amount_divisor); unknown collectors and keys are refused, each problem with its key path."""
    section = walk.section(doc, "collectors", tuple(c.name for c in REGISTRY))
    parsed: dict[str, CollectorSettings] = {}
    for collector in REGISTRY:
        path = f"collectors.{collector.name}"
        keys = fields(collector.settings_type)
        item = walk.section(section.get(collector.name), path, tuple(f.name for f in keys))
        base = collector.settings_type.defaults(inherited)
        values = {f.name: walk.value(item, path, f.name, f.metadata["parse"], getattr(base, f.name)) for f in keys}
        parsed[collector.name] = replace(base, **values)
    return parsed


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate the config file; raise ConfigError naming the file on any problem.
    Nothing else escapes: an unreadable, oversized, non-UTF-8 or malformed file is a ConfigError too."""
    source = str(path)
    try:
        raw = parse_yaml(read_text_file(path, MAX_CONFIG_FILE_BYTES, "config file"))
    except FileProblem as err:
        raise ConfigError(source, [str(err)]) from None
    return parse_config(raw if raw is not None else {}, source, environ)
