"""Load and validate the YAML config file into immutable dataclasses.

Every problem is collected (not just the first) and reported as ``path: key: what is wrong``.
Secrets are read here, once per load, and never appear in ``repr`` or in any message: a value under a secret
key (api_token, api_key, api_email) is never echoed, whatever is wrong with it, nor is a secret file's content.

Everything read from outside is bounded (docs/limits.md): the size of the config file and of every secret file,
the values and characters the document expands to (YAML aliases, ``${VAR}``), its nesting depth, and every
number (finite, within a documented range). Text that is not UTF-8 is refused where it enters.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
ACCOUNT_ID_RE = re.compile(r"^[0-9a-fA-F]{32}$")
INVOICE_TYPES = ("auto", "manual", "all")
INVOICE_SERIES = ("unpaid", "all", "none")
_ENV_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
CREDENTIAL_KEYS = ("api_token", "api_token_file", "api_email", "api_key", "api_key_file")

# Limits on what a config file may make the exporter do (docs/limits.md lists them all).
MAX_CONFIG_FILE_BYTES = 1 << 20  # 1 MiB: some 10,000 accounts
MAX_SECRET_FILE_BYTES = 64 << 10  # 64 KiB: a Cloudflare token is 40 bytes
MAX_CONFIG_VALUES = 200_000  # values (mappings, lists, scalars) once YAML aliases are expanded
MAX_CONFIG_CHARS = 16 << 20  # characters of text (keys and strings) once aliases and ${VAR} are expanded
MAX_CONFIG_DEPTH = 32  # nesting of mappings and lists
MIN_SECRET_LENGTH = 8  # see _secret_problem: a shorter "token" could be an ordinary word, unsafe to mask


class ConfigError(Exception):
    """The config cannot be used; ``problems`` lists every reason, each naming its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = _printable(source)
        # Text from a hostile file (a key with a lone surrogate) must not break stderr or a log line.
        self.problems = [_printable(problem) for problem in problems]
        super().__init__(f"{self.source}: " + "; ".join(self.problems))

    def report(self) -> str:
        return "\n".join(f"{self.source}: {problem}" for problem in self.problems)


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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

    @classmethod
    def following(cls, poll_interval: float, amount_divisor: float) -> CollectorsConfig:
        """The defaults of a config with this poll.interval and metrics.amount_divisor: invoice_history polls
        every poll.interval, every collector divides by metrics.amount_divisor (what the loader does for keys
        the file leaves out; for configs built in code, such as the demo's)."""
        def follow(settings: Any) -> Any:
            return replace(settings, amount_divisor=amount_divisor)

        return cls(replace(follow(InvoiceHistorySettings()), interval=poll_interval),
                   follow(CreditBalanceSettings()), follow(SpendingLimitSettings()),
                   follow(UsageHistorySettings()), follow(InvoicePreviewSettings()))

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
    # Accepted but worth telling the operator (e.g. an upper-case account id that was normalised): the CLI
    # logs each at warn level when the config is loaded or reloaded, and --config.check prints them.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value in this config, for log redaction."""
        found: set[str] = set()
        for creds in [self.cloudflare.credentials, *(a.credentials for a in self.accounts)]:
            if creds:
                found.update(creds.secrets())
        return tuple(sorted(found, key=len, reverse=True))


class _Invalid(Exception):
    """One problem with one value; the walker adds the key path."""


class FileProblem(Exception):
    """A file could not be used (unreadable, too large, not UTF-8, not YAML); the message names no file."""


class _TooBig(Exception):
    """The document exceeds a structural limit: loading stops at once."""


# --- bounded reading, shared with webconfig.py ---


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and limit % (1 << 20) == 0 else f"{limit >> 10} KiB"


def read_text_file(path: str | Path, limit: int, what: str) -> str:
    """The file's text, reading at most ``limit`` bytes: /dev/zero or a huge file fails fast, and so does text
    that is not UTF-8. Raises FileProblem with a message that starts with ``what`` (e.g. "config file")."""
    chunks: list[bytes] = []
    size = 0
    try:
        # Non-blocking: a named pipe without a writer reads as empty instead of hanging a reload forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            while size <= limit and (chunk := os.read(fd, min(limit + 1 - size, 1 << 16))):
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as err:
        raise FileProblem(f"cannot read {what}: {err.strerror or err}") from None
    data = b"".join(chunks)
    if len(data) > limit:
        raise FileProblem(f"{what} is larger than {_size(limit)}, the limit for this file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileProblem(f"{what} is not UTF-8 text (invalid byte at offset {err.start})") from None


def parse_yaml(text: str) -> Any:
    """yaml.safe_load that only ever raises FileProblem, whatever the document holds."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or "syntax error"
        raise FileProblem(f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise FileProblem("invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as err:  # e.g. a 5,000-digit integer, a 13th month
        raise FileProblem(f"invalid YAML: a value cannot be converted: {str(err)[:120]}") from None


# --- scalar parsers: each takes the raw YAML value and returns the typed value or raises _Invalid ---


def _show(value: Any, limit: int = 60) -> str:
    """A short description of a (non-secret) value for a message: never a whole container, never long."""
    if isinstance(value, dict | list | tuple | set | frozenset):
        return f"a {type(value).__name__}"
    if isinstance(value, int) and abs(value) > 10**60:
        return "a number with more than 60 digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _key(key: Any) -> str:
    text = str(key)
    return text if len(text) <= 60 else text[:57] + "..."


def _seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_duration(value: Any, minimum: float = 0.0, maximum: float = math.inf) -> float:
    """Seconds from ``30s``, ``5m``, ``1h30m``, ``500ms`` or a plain number; finite, > 0 and within bounds."""
    if isinstance(value, bool):
        raise _Invalid(f"expected a duration like 30s, 5m or 1h, got {_show(value)}")
    if isinstance(value, int | float):
        seconds = float(value) if not isinstance(value, int) or abs(value) < 1e300 else math.inf
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART_RE.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise _Invalid(f"expected a duration like 30s, 5m or 1h, got {_show(value)}") from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise _Invalid(f"expected a duration like 30s, 5m or 1h, got {_show(value)}")
    if not math.isfinite(seconds):
        raise _Invalid(f"must be a finite duration, got {_show(value)}")
    if seconds <= 0:
        raise _Invalid(f"must be positive, got {_show(value)}")
    if seconds < minimum:
        raise _Invalid(f"must be at least {_seconds(minimum)}, got {_show(value)}")
    if seconds > maximum:
        raise _Invalid(f"must be at most {_seconds(maximum)}, got {_show(value)}")
    return seconds


def _duration(minimum: float, maximum: float) -> Callable[[Any], float]:
    return lambda value: parse_duration(value, minimum, maximum)


def _number(value: Any, kind: type[int] | type[float]) -> float:
    wanted = "an integer" if kind is int else "a number"
    if isinstance(value, bool):
        raise _Invalid(f"expected {wanted}, got {_show(value)}")
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            raise _Invalid(f"expected {wanted}, got {_show(value)}") from None
    if not isinstance(value, int | float):
        raise _Invalid(f"expected {wanted}, got {_show(value)}")
    if isinstance(value, int) and abs(value) > 10**300:
        raise _Invalid(f"must be a finite number of sane size, got {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid(f"must be a finite number, got {_show(value)}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise _Invalid(f"expected an integer, got {_show(value)}")
    return value


def _int_range(minimum: int, maximum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = int(_number(value, int))
        if number < minimum:
            raise _Invalid(f"must be at least {minimum}, got {_show(value)}")
        if number > maximum:
            raise _Invalid(f"must be at most {maximum:,}, got {_show(value)}")
        return number

    return parse


def _float_range(minimum: float, maximum: float) -> Callable[[Any], float]:
    """A finite number with ``minimum < value <= maximum`` when minimum is 0, else ``minimum <= value``."""

    def parse(value: Any) -> float:
        number = float(_number(value, float))
        if minimum == 0 and number <= 0:
            raise _Invalid(f"must be greater than 0, got {_show(value)}")
        if number < minimum:
            raise _Invalid(f"must be at least {minimum:g}, got {_show(value)}")
        if number > maximum:
            raise _Invalid(f"must be at most {maximum:g}, got {_show(value)}")
        return number

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Invalid(f"expected true or false, got {_show(value)}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {type(value).__name__} {_show(value)} (quote it)")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}, got {_show(value)}")
        return value

    return parse


def _base_url(value: Any) -> str:
    text = _string(value).strip().rstrip("/")
    expected = "expected an http:// or https:// URL"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        raise _Invalid(f"{expected}, got {_show(text)}") from None
    if parts.username is not None or parts.password is not None:
        # Not echoed: the part before @ is a credential, and it would appear in every error message.
        raise _Invalid("must not contain a user name or password (user:pass@): they would appear in logs")
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text) \
            or not text.isprintable():
        raise _Invalid(f"{expected}, got {_show(text)}")
    if parts.query or parts.fragment:
        raise _Invalid(f"must not contain a query (?...) or fragment (#...), got {_show(text)}")
    try:
        httpx.URL(text).host  # noqa: B018 - what the client makes of it: a host that is not IDNA fails here
    except (httpx.InvalidURL, ValueError):
        raise _Invalid(f"{expected}, got {_show(text)}") from None
    return text


# --- secrets: never echoed, refused when they cannot be a real credential ---


def _secret_problem(secret: str, kind: str) -> str | None:
    """Why ``secret`` cannot be a Cloudflare credential, or None. The reason never contains the value.

    Every configured secret is masked in every log line by plain substring replacement (logs.py). That is
    only sound for a value that cannot occur in ordinary text, so values that cannot be real credentials are
    refused here: Cloudflare API tokens are 40 and Global API Keys 37 printable ASCII characters."""
    if secret[:7].lower() == "bearer ":
        return "starts with 'Bearer ': write the token alone, the exporter adds 'Bearer ' itself"
    if any(c.isspace() for c in secret):
        return f"contains whitespace (a space or a line break inside the {kind}?)"
    if not all(" " < c < "\x7f" for c in secret):
        return f"contains characters other than printable ASCII, which a Cloudflare {kind} never does"
    if len(secret) < MIN_SECRET_LENGTH:
        return (f"shorter than {MIN_SECRET_LENGTH} characters, so not a Cloudflare {kind} (they have 37 or 40), "
                "and too short to be masked safely in logs")
    if secret.isalpha() and secret.islower():
        return (f"a plain lower-case word, not a Cloudflare {kind} (a placeholder?); a word cannot be masked "
                "in logs without rewriting ordinary text")
    return None


def _email_problem(email: str) -> str | None:
    if not all(" " < c < "\x7f" for c in email) or "@" not in email.strip("@"):
        return "expected the e-mail address of the Cloudflare user (printable ASCII with an @, no spaces)"
    return None


def _secret_value(kind: str) -> Callable[[Any], str]:
    """An inline secret: type errors and plausibility problems are reported without the value."""

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {type(value).__name__} (value not shown: it is a secret)")
        if value:
            problem = _email_problem(value) if kind == "e-mail" else _secret_problem(value, kind)
            if problem:
                raise _Invalid(f"{problem} (value not shown)")
        return value

    return parse


def _secret_file(kind: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        path = _string(value)
        try:
            secret = read_text_file(path, MAX_SECRET_FILE_BYTES, f"secret file {_show(path, 4096)}").rstrip("\r\n")
        except FileProblem as err:
            raise _Invalid(str(err)) from None
        if not secret:
            raise _Invalid(f"secret file {_show(path, 4096)} is empty")
        problem = _secret_problem(secret, kind)
        if problem:
            raise _Invalid(f"the {kind} in secret file {_show(path, 4096)} {_verb(problem)}")
        return secret

    return parse


def _verb(problem: str) -> str:
    """'starts with ...' reads on; 'a plain word' needs an 'is'."""
    return problem if problem.split(" ", 1)[0] in ("starts", "contains") else "is " + problem


# --- the walker ---


class _Loader:
    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.spoiled_paths: set[str] = set()  # values the walker already reported (${VAR} unset, ...)
        self._values = 0
        self._chars = 0

    def _charge(self, chars: int) -> None:
        self._values += 1
        self._chars += chars
        if self._values > MAX_CONFIG_VALUES:
            raise _TooBig(f"the document expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases "
                          "repeating a large part?)")
        if self._chars > MAX_CONFIG_CHARS:
            raise _TooBig(f"the document expands to more than {_size(MAX_CONFIG_CHARS)} of text (YAML aliases "
                          "or ${VAR} repeating a large part?)")

    def expand(self, node: Any, path: tuple[Any, ...] = ()) -> Any:
        """A copy of the document with ${VAR} and ${VAR:-default} expanded in every string: a plain tree
        (aliases copied, bounded by the limits above), every string valid UTF-8."""
        if len(path) > MAX_CONFIG_DEPTH:
            raise _TooBig(f"{_path(path[:4])}...: nested deeper than {MAX_CONFIG_DEPTH} levels "
                          "(or a YAML alias that contains itself)")
        if isinstance(node, dict):
            self._charge(0)
            out: dict[Any, Any] = {}
            for k, v in node.items():
                self._charge(len(k) if isinstance(k, str) else 0)
                out[k] = self.expand(v, (*path, k))
            return out
        if isinstance(node, list | tuple | set | frozenset):
            self._charge(0)
            return [self.expand(v, (*path, i)) for i, v in enumerate(node)]
        if isinstance(node, str):

            def substitute(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                if name in self.environ and (default is None or self.environ[name] != ""):
                    return self.environ[name]
                if default is not None:
                    return default
                where = _path(path)
                self.problems.append(f"{where}: environment variable {name} is not set")
                self.spoiled_paths.add(where)
                return ""

            text = _ENV_REF_RE.sub(substitute, node) if "${" in node else node
            self._charge(len(text))
            if _SURROGATE_RE.search(text):
                # From a YAML "\ud800" escape or an environment variable that is not UTF-8; never echoed.
                where = _path(path)
                self.problems.append(f"{where}: contains text that is not valid Unicode (a lone surrogate, "
                                     "from a \\u escape or an environment variable that is not UTF-8)")
                self.spoiled_paths.add(where)
                return ""
            return text
        self._charge(len(node) if isinstance(node, bytes) else 0)
        return node

    def section(self, doc: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            self.problems.append(f"{path or 'top level'}: expected a mapping, got {type(doc).__name__}")
            return {}
        for key in doc:
            if key not in allowed:
                self.problems.append(f"{path + '.' if path else ''}{_key(key)}: unknown key "
                                     f"(allowed: {', '.join(allowed)})")
        return doc

    def value(self, doc: dict[str, Any], path: str, key: str, parse: Callable[[Any], Any], default: Any) -> Any:
        if key not in doc or doc[key] is None:
            return default
        if f"{path}.{key}" in self.spoiled_paths:
            return default  # its problem is already reported
        try:
            return parse(doc[key])
        except _Invalid as problem:
            self.problems.append(f"{path}.{key}: {problem}")
            return default

    def credentials(self, doc: dict[str, Any], path: str) -> tuple[Credentials | None, bool]:
        """(credentials set at this level or None when it sets none, whether a credential key here is broken).

        Which keys are set decides the combination checks, not whether their values could be read, so an
        unreadable file is one problem, not also a missing or empty key."""
        before = len(self.problems)
        token = self.value(doc, path, "api_token", _secret_value("API token"), None)
        token_file = self.value(doc, path, "api_token_file", _secret_file("API token"), None)
        email = self.value(doc, path, "api_email", _secret_value("e-mail"), None)
        key = self.value(doc, path, "api_key", _secret_value("Global API Key"), None)
        key_file = self.value(doc, path, "api_key_file", _secret_file("Global API Key"), None)
        set_keys = {k for k in CREDENTIAL_KEYS if doc.get(k) not in (None, "")}
        spoiled = {k for k in CREDENTIAL_KEYS if f"{path}.{k}" in self.spoiled_paths}
        if not set_keys:
            return None, bool(spoiled)
        if {"api_token", "api_token_file"} <= set_keys:
            self.problems.append(f"{path}: set api_token or api_token_file, not both")
        if {"api_key", "api_key_file"} <= set_keys:
            self.problems.append(f"{path}: set api_key or api_key_file, not both")
        has_token = bool(set_keys & {"api_token", "api_token_file"})
        has_key = bool(set_keys & {"api_key", "api_key_file"})
        has_email = "api_email" in set_keys
        if has_token and (has_key or has_email):
            self.problems.append(f"{path}: set either an API token or api_email + api_key, not both")
        elif not has_token and has_email != has_key and not spoiled:
            missing = "api_key (or api_key_file)" if has_email else "api_email"
            self.problems.append(f"{path}: {missing} is missing: the Global API Key needs both")
        if len(self.problems) > before or spoiled:
            return None, True
        return Credentials(api_token=token or token_file or None, api_email=email or None,
                           api_key=key or key_file or None), False


def _path(parts: tuple[Any, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{_key(part)}" if text else _key(part))
    return text


def _credentials_from_env(load: _Loader, environ: Mapping[str, str]) -> Credentials | None:
    def checked(name: str, kind: str) -> str | None:
        value = environ.get(name) or None
        if value is not None:
            problem = _email_problem(value) if kind == "e-mail" else _secret_problem(value, kind)
            if problem:
                load.problems.append(f"{name} (environment variable): {problem} (value not shown)")
                return None
        return value

    if environ.get("CLOUDFLARE_API_TOKEN"):
        token = checked("CLOUDFLARE_API_TOKEN", "API token")
        return Credentials(api_token=token) if token else None
    if environ.get("CLOUDFLARE_API_KEY") and environ.get("CLOUDFLARE_EMAIL"):
        key, email = checked("CLOUDFLARE_API_KEY", "Global API Key"), checked("CLOUDFLARE_EMAIL", "e-mail")
        return Credentials(api_email=email, api_key=key) if key and email else None
    return None


def parse_config(raw: Any, source: str = "config", environ: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML document; raise ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    load = _Loader(source, env)
    try:
        doc = load.expand(raw)
    except _TooBig as err:
        raise ConfigError(source, [str(err)]) from None
    top = load.section(doc, "", ("cloudflare", "poll", "accounts", "discovery", "metrics", "sharding",
                                 "collectors"))

    cf_doc = load.section(top.get("cloudflare"), "cloudflare", (
        "base_url", "timeout", "requests_per_second", "max_retries", "per_page", "max_pages", *CREDENTIAL_KEYS,
    ))
    global_creds, global_broken = load.credentials(cf_doc, "cloudflare")
    if global_creds is None and not global_broken and not any(cf_doc.get(k) for k in CREDENTIAL_KEYS):
        before = len(load.problems)
        global_creds = _credentials_from_env(load, env)
        global_broken = len(load.problems) > before
    cloudflare = CloudflareConfig(
        base_url=load.value(cf_doc, "cloudflare", "base_url", _base_url, DEFAULT_BASE_URL),
        timeout=load.value(cf_doc, "cloudflare", "timeout", _duration(0.1, 300), 10.0),
        requests_per_second=load.value(cf_doc, "cloudflare", "requests_per_second", _float_range(0.01, 1000), 3.0),
        max_retries=load.value(cf_doc, "cloudflare", "max_retries", _int_range(0, 20), 3),
        per_page=load.value(cf_doc, "cloudflare", "per_page", _int_range(1, 1000), None),
        max_pages=load.value(cf_doc, "cloudflare", "max_pages", _int_range(1, 10_000), 100),
        credentials=global_creds,
    )

    poll_doc = load.section(top.get("poll"), "poll", ("interval", "max_concurrency"))
    poll = PollConfig(
        interval=load.value(poll_doc, "poll", "interval", _duration(1, 7 * 86400), 300.0),
        max_concurrency=load.value(poll_doc, "poll", "max_concurrency", _int_range(1, 256), 8),
    )

    accounts = _parse_accounts(load, top.get("accounts"), global_creds, global_broken)

    disc_doc = load.section(top.get("discovery"), "discovery", ("enabled", "include", "exclude"))
    discovery = DiscoveryConfig(
        enabled=load.value(disc_doc, "discovery", "enabled", _bool, False),
        include=load.value(disc_doc, "discovery", "include", _regex_list, ()),
        exclude=load.value(disc_doc, "discovery", "exclude", _regex_list, ()),
    )
    if discovery.enabled and global_creds is None and not global_broken:
        load.problems.append(
            "discovery.enabled: discovery needs credentials in the cloudflare section "
            "(or CLOUDFLARE_API_TOKEN in the environment)"
        )
    if not accounts and not discovery.enabled and not load.problems:
        load.problems.append("accounts: no accounts listed and discovery is disabled: nothing to poll")

    met_doc = load.section(top.get("metrics"), "metrics", ("amount_divisor", "invoice_series", "invoice_pdf_url"))
    metrics = MetricsConfig(
        amount_divisor=load.value(met_doc, "metrics", "amount_divisor", _float_range(0, 1e9), 100.0),
        invoice_series=load.value(met_doc, "metrics", "invoice_series", _one_of(INVOICE_SERIES), "unpaid"),
        invoice_pdf_url=load.value(met_doc, "metrics", "invoice_pdf_url", _bool, False),
    )

    shard_doc = load.section(top.get("sharding"), "sharding", ("shard", "total_shards"))
    sharding = ShardingConfig(
        shard=load.value(shard_doc, "sharding", "shard", _int_range(0, 9_999), 0),
        total_shards=load.value(shard_doc, "sharding", "total_shards", _int_range(1, 10_000), 1),
    )
    if sharding.shard >= sharding.total_shards:
        load.problems.append(
            f"sharding.shard: must be below total_shards ({sharding.total_shards}), got {sharding.shard}"
        )

    collectors = _parse_collectors(load, top.get("collectors"), poll.interval, metrics.amount_divisor)

    if load.problems:
        raise ConfigError(source, load.problems)
    return Config(cloudflare, poll, accounts, discovery, metrics, sharding, collectors, tuple(load.warnings))


def _account_id(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string of 32 hexadecimal characters (quote it), got {_show(value)}")
    if not ACCOUNT_ID_RE.match(value):
        raise _Invalid(f"{_show(value)} is not an account id (32 hexadecimal characters)")
    return value


def _regex_list(value: Any) -> tuple[re.Pattern[str], ...]:
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of regular expressions, got {_show(value)}")
    patterns = []
    for item in value:
        try:
            patterns.append(re.compile(_string(item)))
        except re.error as err:
            raise _Invalid(f"{_show(item)} is not a valid regular expression: {err}") from None
    return tuple(patterns)


def _parse_accounts(load: _Loader, doc: Any, global_creds: Credentials | None,
                    global_broken: bool) -> tuple[AccountConfig, ...]:
    if doc is None:
        return ()
    if not isinstance(doc, list):
        load.problems.append(f"accounts: expected a list, got {type(doc).__name__}")
        return ()
    accounts: list[AccountConfig] = []
    seen_ids: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    without_credentials: list[str] = []
    for index, entry in enumerate(doc):
        path = f"accounts[{index}]"
        if isinstance(entry, str):
            entry = {"id": entry}
        item = load.section(entry, path, ("id", "name", "type", *CREDENTIAL_KEYS))
        # Every field is checked, whatever else is wrong with this entry: all problems at once.
        account_id: str | None = None
        if "id" not in item:
            load.problems.append(f"{path}.id: missing")
        else:
            account_id = load.value(item, path, "id", _account_id, None)
        if account_id is not None and account_id != account_id.lower():
            account_id = account_id.lower()
            load.warnings.append(f"{path}.id: upper-case letters changed to lower case ({account_id}), as "
                                 "Cloudflare writes account ids and as the account_id label carries them")
        if account_id is not None and account_id in seen_ids:
            load.problems.append(f"{path}.id: duplicate account {account_id} (also accounts[{seen_ids[account_id]}])")
            account_id = None
        elif account_id is not None:
            seen_ids[account_id] = index
        creds, broken = load.credentials(item, path)
        name = load.value(item, path, "name", _string, None) or account_id
        account_type = load.value(item, path, "type", _one_of(INVOICE_TYPES), "all")
        if name is not None and name in seen_names:
            load.problems.append(f"{path}.name: {_show(name)} is also the name of accounts[{seen_names[name]}]: "
                                 "the account label would not tell them apart; give each account its own name")
        elif name is not None:
            seen_names[name] = index
        if creds is None and not broken:
            creds = global_creds
            if creds is None and not global_broken:
                without_credentials.append(path)
        if account_id is not None and name is not None and creds is not None:
            accounts.append(AccountConfig(id=account_id, name=name, type=account_type, credentials=creds))
    if without_credentials:  # one cause (no credentials anywhere), one message, however many accounts
        load.problems.append(
            f"{', '.join(without_credentials)}: no credentials: set cloudflare.api_token (or api_token_file, or "
            "api_email + api_key), the same per account, or CLOUDFLARE_API_TOKEN in the environment"
        )
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
    "interval": _duration(1, 7 * 86400),  # as poll.interval: 1s .. 7d
    "amount_divisor": _float_range(0, 1e9),  # as metrics.amount_divisor: finite, (0, 1e9]
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
        parsed[name] = kind(**values)
    return CollectorsConfig(**parsed)  # type: ignore[arg-type]


# --- end of the collectors block ----------------------------------------------------------------------------


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate the config file; raise ConfigError naming the file on any problem.
    Nothing else escapes: an unreadable, oversized, non-UTF-8 or malformed file is a ConfigError too."""
    source = str(path)
    try:
        raw = parse_yaml(read_text_file(path, MAX_CONFIG_FILE_BYTES, "config file"))
    except FileProblem as err:
        raise ConfigError(source, [str(err)]) from None
    return parse_config(raw if raw is not None else {}, source, environ)
