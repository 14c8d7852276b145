"""Load and validate the YAML config file into immutable dataclasses.

Every problem is collected (not just the first) and reported as ``path: key: what is wrong``.
Secrets are read here, once per load, and never appear in ``repr`` or in any message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
ACCOUNT_ID_RE = re.compile(r"^[0-9a-fA-F]{32}$")
INVOICE_TYPES = ("auto", "manual", "all")
INVOICE_SERIES = ("unpaid", "all", "none")
_ENV_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
CREDENTIAL_KEYS = ("api_token", "api_token_file", "api_email", "api_key", "api_key_file")


class ConfigError(Exception):
    """The config cannot be used; ``problems`` lists every reason, each naming its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def report(self) -> str:
        return "\n".join(f"{self.source}: {problem}" for problem in self.problems)


@dataclass(frozen=True)
class Credentials:
    """Either an API token or a legacy e-mail + Global API Key pair."""

    api_token: str | None = field(default=None, repr=False)
    api_email: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return "token" if self.api_token else "global_key"

    def headers(self) -> dict[str, str]:
        if self.api_token:
            return {"Authorization": f"Bearer {self.api_token}"}
        return {"X-Auth-Email": self.api_email or "", "X-Auth-Key": self.api_key or ""}

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.api_token, self.api_key, self.api_email) if s)


@dataclass(frozen=True)
class CloudflareConfig:
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 10.0
    requests_per_second: float = 3.0
    max_retries: int = 3
    per_page: int | None = None
    max_pages: int = 100
    credentials: Credentials | None = None


@dataclass(frozen=True)
class AccountConfig:
    id: str
    name: str
    type: str
    credentials: Credentials = field(repr=False)


@dataclass(frozen=True)
class DiscoveryConfig:
    enabled: bool = False
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    def selects(self, account_id: str, name: str) -> bool:
        def hit(patterns: tuple[re.Pattern[str], ...]) -> bool:
            return any(p.search(name) or p.search(account_id) for p in patterns)

        return (not self.include or hit(self.include)) and not hit(self.exclude)


@dataclass(frozen=True)
class MetricsConfig:
    amount_divisor: float = 100.0
    invoice_series: str = "unpaid"
    invoice_pdf_url: bool = False


@dataclass(frozen=True)
class PollConfig:
    interval: float = 300.0
    max_concurrency: int = 8


@dataclass(frozen=True)
class ShardingConfig:
    shard: int = 0
    total_shards: int = 1


# --- collectors (issue 10): the settings of each billing endpoint collector ---------------------------------

COLLECTOR_NAMES = ("invoice_history", "credit_balance", "spending_limit", "usage_history", "invoice_preview")


@dataclass(frozen=True)
class CollectorSettings:
    """What every endpoint collector has: on or off, its own poll interval (seconds), its amount divisor
    (API amounts are divided by it: the units of several endpoints are an assumption, see docs/billing.md)."""

    enabled: bool = True
    interval: float = 300.0
    amount_divisor: float = 100.0


@dataclass(frozen=True)
class InvoiceHistorySettings(CollectorSettings):
    """Default interval: poll.interval; default divisor: metrics.amount_divisor."""


@dataclass(frozen=True)
class CreditBalanceSettings(CollectorSettings):
    interval: float = 60.0
    payment_method_labels: bool = False  # card brand and last four digits as an info metric: opt-in


@dataclass(frozen=True)
class SpendingLimitSettings(CollectorSettings):
    pass


@dataclass(frozen=True)
class UsageHistorySettings(CollectorSettings):
    pass


@dataclass(frozen=True)
class InvoicePreviewSettings(CollectorSettings):
    interval: float = 900.0


@dataclass(frozen=True)
class CollectorsConfig:
    invoice_history: InvoiceHistorySettings = InvoiceHistorySettings()
    credit_balance: CreditBalanceSettings = CreditBalanceSettings()
    spending_limit: SpendingLimitSettings = SpendingLimitSettings()
    usage_history: UsageHistorySettings = UsageHistorySettings()
    invoice_preview: InvoicePreviewSettings = InvoicePreviewSettings()

    def by_endpoint(self) -> dict[str, CollectorSettings]:
        """Every collector's settings by endpoint name, in COLLECTOR_NAMES order."""
        return {name: getattr(self, name) for name in COLLECTOR_NAMES}

    def enabled(self) -> dict[str, CollectorSettings]:
        return {name: s for name, s in self.by_endpoint().items() if s.enabled}


# --- end of the collectors block ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    cloudflare: CloudflareConfig = CloudflareConfig()
    poll: PollConfig = PollConfig()
    accounts: tuple[AccountConfig, ...] = ()
    discovery: DiscoveryConfig = DiscoveryConfig()
    metrics: MetricsConfig = MetricsConfig()
    sharding: ShardingConfig = ShardingConfig()
    collectors: CollectorsConfig = CollectorsConfig()

    def secrets(self) -> tuple[str, ...]:
        """Every secret value in this config, for log redaction."""
        found: set[str] = set()
        for creds in [self.cloudflare.credentials, *(a.credentials for a in self.accounts)]:
            if creds:
                found.update(creds.secrets())
        return tuple(sorted(found, key=len, reverse=True))


class _Invalid(Exception):
    """One problem with one value; the walker adds the key path."""


# --- scalar parsers: each takes the raw YAML value and returns the typed value or raises _Invalid ---


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise _Invalid(f"expected a duration like 30s, 5m or 1h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART_RE.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise _Invalid(f"expected a duration like 30s, 5m or 1h, got {value!r}") from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise _Invalid(f"expected a duration like 30s, 5m or 1h, got {value!r}")
    if seconds <= 0:
        raise _Invalid(f"must be positive, got {value!r}")
    return seconds


def _number(value: Any, kind: type[int] | type[float]) -> float:
    if isinstance(value, bool):
        raise _Invalid(f"expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            raise _Invalid(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if kind is int and not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        raise _Invalid(f"expected an integer, got {value!r}")
    if not isinstance(value, int | float):
        raise _Invalid(f"expected a number, got {value!r}")
    return value


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = int(_number(value, int))
        if number < minimum:
            raise _Invalid(f"must be at least {minimum}, got {value!r}")
        return number

    return parse


def _positive_float(value: Any) -> float:
    number = float(_number(value, float))
    if number <= 0:
        raise _Invalid(f"must be greater than 0, got {value!r}")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Invalid(f"expected true or false, got {value!r}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {type(value).__name__} {value!r} (quote it)")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def _base_url(value: Any) -> str:
    text = _string(value).strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", text):
        raise _Invalid(f"expected an http:// or https:// URL, got {text!r}")
    return text


def _account_id(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string of 32 hexadecimal characters (quote it), got {value!r}")
    if not ACCOUNT_ID_RE.match(value):
        raise _Invalid(f"{value!r} is not an account id (32 hexadecimal characters)")
    return value.lower()


def _regex_list(value: Any) -> tuple[re.Pattern[str], ...]:
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of regular expressions, got {value!r}")
    patterns = []
    for item in value:
        try:
            patterns.append(re.compile(_string(item)))
        except re.error as err:
            raise _Invalid(f"{item!r} is not a valid regular expression: {err}") from None
    return tuple(patterns)


def _read_secret_file(value: Any) -> str:
    path = Path(_string(value))
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as err:
        raise _Invalid(f"cannot read secret file {str(path)!r}: {err.strerror or err}") from None
    if not secret:
        raise _Invalid(f"secret file {str(path)!r} is empty")
    return secret


# --- the walker ---


class _Loader:
    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.problems: list[str] = []

    def expand(self, node: Any, path: str) -> Any:
        """Expand ${VAR} and ${VAR:-default} in every string of the document."""
        if isinstance(node, dict):
            return {k: self.expand(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [self.expand(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str):

            def substitute(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                if name in self.environ and (default is None or self.environ[name] != ""):
                    return self.environ[name]
                if default is not None:
                    return default
                self.problems.append(f"{path}: environment variable {name} is not set")
                return ""

            return _ENV_REF_RE.sub(substitute, node)
        return node

    def section(self, doc: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            self.problems.append(f"{path}: expected a mapping, got {type(doc).__name__}")
            return {}
        for key in doc:
            if key not in allowed:
                self.problems.append(f"{path + '.' if path else ''}{key}: unknown key (allowed: {', '.join(allowed)})")
        return doc

    def value(self, doc: dict[str, Any], path: str, key: str, parse: Callable[[Any], Any], default: Any) -> Any:
        if key not in doc or doc[key] is None:
            return default
        try:
            return parse(doc[key])
        except _Invalid as problem:
            self.problems.append(f"{path}.{key}: {problem}")
            return default

    def credentials(self, doc: dict[str, Any], path: str) -> Credentials | None:
        """Credentials set at this level, or None when the level sets none."""
        token = self.value(doc, path, "api_token", _string, None)
        token_file = self.value(doc, path, "api_token_file", _read_secret_file, None)
        email = self.value(doc, path, "api_email", _string, None)
        key = self.value(doc, path, "api_key", _string, None)
        key_file = self.value(doc, path, "api_key_file", _read_secret_file, None)
        set_keys = [k for k in CREDENTIAL_KEYS if doc.get(k) not in (None, "")]
        if not set_keys:
            return None
        if token is not None and token_file is not None:
            self.problems.append(f"{path}: set api_token or api_token_file, not both")
        if key is not None and key_file is not None:
            self.problems.append(f"{path}: set api_key or api_key_file, not both")
        token = token or token_file
        key = key or key_file
        if token and (email or key):
            self.problems.append(f"{path}: set either an API token or api_email + api_key, not both")
        if not token and bool(email) != bool(key):
            missing = "api_key (or api_key_file)" if email else "api_email"
            self.problems.append(f"{path}: {missing} is missing: the Global API Key needs both")
        if not token and not (email and key):
            if "api_token" in set_keys or "api_token_file" in set_keys:
                self.problems.append(f"{path}.api_token: is empty")
            return None
        return Credentials(api_token=token or None, api_email=email or None, api_key=key or None)


def _credentials_from_env(environ: Mapping[str, str]) -> Credentials | None:
    if environ.get("CLOUDFLARE_API_TOKEN"):
        return Credentials(api_token=environ["CLOUDFLARE_API_TOKEN"])
    if environ.get("CLOUDFLARE_API_KEY") and environ.get("CLOUDFLARE_EMAIL"):
        return Credentials(api_email=environ["CLOUDFLARE_EMAIL"], api_key=environ["CLOUDFLARE_API_KEY"])
    return None


def parse_config(raw: Any, source: str = "config", environ: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML document; raise ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    load = _Loader(source, env)
    doc = load.expand(raw, "")
    top = load.section(doc, "", ("cloudflare", "poll", "accounts", "discovery", "metrics", "sharding",
                                         "collectors"))

    cf_doc = load.section(top.get("cloudflare"), "cloudflare", (
        "base_url", "timeout", "requests_per_second", "max_retries", "per_page", "max_pages", *CREDENTIAL_KEYS,
    ))
    global_creds = load.credentials(cf_doc, "cloudflare")
    if global_creds is None and not any(cf_doc.get(k) for k in CREDENTIAL_KEYS):
        global_creds = _credentials_from_env(env)
    cloudflare = CloudflareConfig(
        base_url=load.value(cf_doc, "cloudflare", "base_url", _base_url, DEFAULT_BASE_URL),
        timeout=load.value(cf_doc, "cloudflare", "timeout", parse_duration, 10.0),
        requests_per_second=load.value(cf_doc, "cloudflare", "requests_per_second", _positive_float, 3.0),
        max_retries=load.value(cf_doc, "cloudflare", "max_retries", _int_at_least(0), 3),
        per_page=load.value(cf_doc, "cloudflare", "per_page", _int_at_least(1), None),
        max_pages=load.value(cf_doc, "cloudflare", "max_pages", _int_at_least(1), 100),
        credentials=global_creds,
    )

    poll_doc = load.section(top.get("poll"), "poll", ("interval", "max_concurrency"))
    poll = PollConfig(
        interval=load.value(poll_doc, "poll", "interval", parse_duration, 300.0),
        max_concurrency=load.value(poll_doc, "poll", "max_concurrency", _int_at_least(1), 8),
    )
    if poll.interval < 1:
        load.problems.append(f"poll.interval: must be at least 1s, got {poll.interval}s")

    accounts = _parse_accounts(load, top.get("accounts"), global_creds)

    disc_doc = load.section(top.get("discovery"), "discovery", ("enabled", "include", "exclude"))
    discovery = DiscoveryConfig(
        enabled=load.value(disc_doc, "discovery", "enabled", _bool, False),
        include=load.value(disc_doc, "discovery", "include", _regex_list, ()),
        exclude=load.value(disc_doc, "discovery", "exclude", _regex_list, ()),
    )
    if discovery.enabled and global_creds is None:
        load.problems.append(
            "discovery.enabled: discovery needs credentials in the cloudflare section "
            "(or CLOUDFLARE_API_TOKEN in the environment)"
        )
    if not accounts and not discovery.enabled and not load.problems:
        load.problems.append("accounts: no accounts listed and discovery is disabled: nothing to poll")

    met_doc = load.section(top.get("metrics"), "metrics", ("amount_divisor", "invoice_series", "invoice_pdf_url"))
    metrics = MetricsConfig(
        amount_divisor=load.value(met_doc, "metrics", "amount_divisor", _positive_float, 100.0),
        invoice_series=load.value(met_doc, "metrics", "invoice_series", _one_of(INVOICE_SERIES), "unpaid"),
        invoice_pdf_url=load.value(met_doc, "metrics", "invoice_pdf_url", _bool, False),
    )

    shard_doc = load.section(top.get("sharding"), "sharding", ("shard", "total_shards"))
    sharding = ShardingConfig(
        shard=load.value(shard_doc, "sharding", "shard", _int_at_least(0), 0),
        total_shards=load.value(shard_doc, "sharding", "total_shards", _int_at_least(1), 1),
    )
    if sharding.shard >= sharding.total_shards:
        load.problems.append(
            f"sharding.shard: must be below total_shards ({sharding.total_shards}), got {sharding.shard}"
        )

    collectors = _parse_collectors(load, top.get("collectors"), poll.interval, metrics.amount_divisor)

    if load.problems:
        raise ConfigError(source, load.problems)
    return Config(cloudflare, poll, accounts, discovery, metrics, sharding, collectors)


def _parse_accounts(load: _Loader, doc: Any, global_creds: Credentials | None) -> tuple[AccountConfig, ...]:
    if doc is None:
        return ()
    if not isinstance(doc, list):
        load.problems.append(f"accounts: expected a list, got {type(doc).__name__}")
        return ()
    accounts: list[AccountConfig] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(doc):
        path = f"accounts[{index}]"
        if isinstance(entry, str):
            entry = {"id": entry}
        item = load.section(entry, path, ("id", "name", "type", *CREDENTIAL_KEYS))
        if "id" not in item:
            load.problems.append(f"{path}.id: missing")
            continue
        account_id = load.value(item, path, "id", _account_id, None)
        if account_id is None:
            continue
        if account_id in seen:
            load.problems.append(f"{path}.id: duplicate account {account_id} (also accounts[{seen[account_id]}])")
            continue
        seen[account_id] = index
        creds = load.credentials(item, path) or global_creds
        if creds is None:
            load.problems.append(
                f"{path}: no credentials: set cloudflare.api_token (or api_token_file, or api_email + "
                "api_key), the same per account, or CLOUDFLARE_API_TOKEN in the environment"
            )
            continue
        name = load.value(item, path, "name", _string, account_id) or account_id
        accounts.append(AccountConfig(
            id=account_id,
            name=name,
            type=load.value(item, path, "type", _one_of(INVOICE_TYPES), "all"),
            credentials=creds,
        ))
    return tuple(accounts)


# --- collectors (issue 10) ----------------------------------------------------------------------------------

_COLLECTOR_SETTINGS: dict[str, type[CollectorSettings]] = {
    "invoice_history": InvoiceHistorySettings,
    "credit_balance": CreditBalanceSettings,
    "spending_limit": SpendingLimitSettings,
    "usage_history": UsageHistorySettings,
    "invoice_preview": InvoicePreviewSettings,
}
_COLLECTOR_KEY_PARSERS: dict[str, Callable[[Any], Any]] = {
    "enabled": _bool,
    "interval": parse_duration,
    "amount_divisor": _positive_float,
    "payment_method_labels": _bool,
}


def _parse_collectors(load: _Loader, doc: Any, poll_interval: float, divisor: float) -> CollectorsConfig:
    """The ``collectors:`` section. Defaults: every collector on; invoice_history every poll.interval, the others
    at their own interval (credit_balance 1m, spending_limit and usage_history 5m, invoice_preview 15m); every
    divisor metrics.amount_divisor. Unknown collectors and keys are refused, each problem with its key path."""
    section = load.section(doc, "collectors", COLLECTOR_NAMES)
    parsed: dict[str, CollectorSettings] = {}
    for name, kind in _COLLECTOR_SETTINGS.items():
        path = f"collectors.{name}"
        keys = tuple(f.name for f in fields(kind))
        item = load.section(section.get(name), path, keys)
        base = kind(amount_divisor=divisor)
        if name == "invoice_history":
            base = replace(base, interval=poll_interval)
        values = {key: load.value(item, path, key, _COLLECTOR_KEY_PARSERS[key], getattr(base, key)) for key in keys}
        settings = kind(**values)
        if "interval" in item and 0 < settings.interval < 1:
            load.problems.append(f"{path}.interval: must be at least 1s, got {settings.interval}s")
        parsed[name] = settings
    return CollectorsConfig(**parsed)  # type: ignore[arg-type]


# --- end of the collectors block ----------------------------------------------------------------------------


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate the config file; raise ConfigError naming the file on any problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(source, [f"cannot read config file: {err.strerror or err}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or "syntax error"
        raise ConfigError(source, [f"invalid YAML{where}: {problem}"]) from None
    return parse_config(raw if raw is not None else {}, source, environ)
