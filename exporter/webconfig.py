"""``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

Supported: ``tls_server_config`` (cert_file, key_file, client_ca_file, client_auth_type, min_version,
max_version) and ``basic_auth_users`` (bcrypt hashes). Anything else is refused by name.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from exporter.config.files import FileProblem, parse_yaml, read_text_file
from exporter.config.model import ConfigError

_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version")
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}

# Limits (docs/limits.md).
MAX_WEB_CONFIG_BYTES = 1 << 20
MAX_TLS_FILE_BYTES = 1 << 20
MIN_BCRYPT_COST, MAX_BCRYPT_COST = 4, 17  # what htpasswd -B accepts; cost 31 would take days per login
BCRYPT_MAX_PASSWORD_BYTES = 72  # bcrypt uses no more; htpasswd and the exporter-toolkit ignore the rest too
AUTH_CACHE_SIZE = 256
AUTH_CACHE_SECONDS = 60.0

_BCRYPT_HASH_RE = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from ``Authorization: Basic ...``, or None for anything malformed. Decided before any
    user is looked up, so how fast a malformed header is refused says nothing about the users."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        # A str with non-ASCII characters is a ValueError too; binascii.Error is one.
        text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:
        return None
    user, colon, password = text.partition(":")
    if not colon:
        return None
    return user, password


def _dummy_hash(cost: int) -> bytes:
    """A bcrypt hash of cost ``cost`` that matches no password (made without paying that cost): an unknown
    user is checked against it, so it costs exactly what a wrong password of a real user costs."""
    return bcrypt.gensalt(rounds=cost) + "".join(secrets.choice(_BCRYPT_ALPHABET) for _ in range(31)).encode()


class BasicAuth:
    """bcrypt basic auth as in the exporter-toolkit: one check at a time, results cached for a minute."""

    def __init__(self, users: dict[str, bytes], clock: Callable[[], float] = time.monotonic) -> None:
        self.users = users
        self._clock = clock
        costs = {int(hashed[4:6]) for hashed in users.values()}
        self._dummy = _dummy_hash(max(costs, default=10))
        self._cache: OrderedDict[bytes, tuple[float, bool]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BasicAuth(users={sorted(self.users)!r})"

    def check(self, header: str | None) -> bool:
        """True if the Authorization header carries a known user and the right password. Never raises."""
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self.users.get(user)
        target = hashed if hashed is not None else self._dummy
        # Keyed by a digest, never the password itself; the stored hash is part of the key.
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), target))).digest()
        now = self._clock()
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        secret = password.encode()[:BCRYPT_MAX_PASSWORD_BYTES]
        with self._bcrypt_lock:  # a flood of logins uses one core, not all of them
            try:
                ok = bcrypt.checkpw(secret, target)
            except ValueError:  # refused at load already; never a dropped connection
                ok = False
        ok = ok and hashed is not None
        with self._cache_lock:
            self._cache[key] = (now + AUTH_CACHE_SECONDS, ok)
            self._cache.move_to_end(key)
            while len(self._cache) > AUTH_CACHE_SIZE:
                self._cache.popitem(last=False)
        return ok


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    basic_auth: BasicAuth | None = None
    # Accepted but worth telling the operator; the CLI logs each at warn level on load and reload.
    warnings: tuple[str, ...] = field(default=(), compare=False)


def load_web_config(path: str | None) -> WebConfig:
    """Read and check the web config; raise ConfigError naming the file on any problem, never anything else."""
    if not path:
        return WebConfig()
    source = str(path)
    try:
        doc = parse_yaml(read_text_file(path, MAX_WEB_CONFIG_BYTES, "web config file")) or {}
    except FileProblem as err:
        raise ConfigError(source, [str(err)]) from None
    if not isinstance(doc, dict):
        raise ConfigError(source, ["expected a mapping at the top level"])
    problems: list[str] = []
    warnings: list[str] = []
    for key in doc:
        if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            problems.append(f"{str(key)[:60]}: unknown key (supported: tls_server_config, basic_auth_users)")
    if doc.get("http_server_config"):
        problems.append("http_server_config: not supported by this exporter")
    auth = _basic_auth(doc.get("basic_auth_users"), problems, warnings)
    context = _tls_context(doc.get("tls_server_config"), Path(path).parent, problems)
    if problems:
        raise ConfigError(source, problems)
    return WebConfig(context, auth, tuple(warnings))


def _bcrypt_problem(hashed: Any) -> str | None:
    """Why ``hashed`` is not a usable bcrypt hash, or None. Checked without paying the hash's cost."""
    generate = "generate one with htpasswd -nBC 10 <user>"
    if not isinstance(hashed, str) or not (match := _BCRYPT_HASH_RE.match(hashed)):
        return f"not a bcrypt hash ({generate})"
    cost = int(match.group(1))
    if not MIN_BCRYPT_COST <= cost <= MAX_BCRYPT_COST:
        return (f"bcrypt cost {cost} is outside {MIN_BCRYPT_COST} to {MAX_BCRYPT_COST} (each login would take "
                f"{'days' if cost > 24 else 'minutes' if cost > MAX_BCRYPT_COST else 'no time'}; {generate})")
    try:
        # The same salt and digest at cost 4: a malformed salt raises here in a millisecond, not at login.
        bcrypt.checkpw(b"", f"{hashed[:4]}04{hashed[6:]}".encode())
    except ValueError:
        return f"not a valid bcrypt hash (cut short or mistyped? {generate})"
    return None


def _basic_auth(users: Any, problems: list[str], warnings: list[str]) -> BasicAuth | None:
    if not users:
        return None
    if not isinstance(users, dict):
        problems.append("basic_auth_users: expected a mapping of user name to bcrypt hash")
        return None
    hashes: dict[str, bytes] = {}
    for user, hashed in users.items():
        name = str(user)
        problem = _bcrypt_problem(hashed)
        if ":" in name:
            problem = "a user name cannot contain ':' (basic auth splits user and password at the first ':')"
        if problem:
            problems.append(f"basic_auth_users.{name[:60]}: {problem}")
            continue
        hashes[name] = hashed.encode()
    costs = sorted({int(h[4:6]) for h in hashes.values()})
    if len(costs) > 1:
        warnings.append(f"basic_auth_users: the hashes use different bcrypt costs ({', '.join(map(str, costs))}): "
                        f"a failed login of a user whose hash costs less than {costs[-1]} is answered sooner "
                        "than one of an unknown user, which tells that the user exists; use one cost for all")
    return BasicAuth(hashes)


def _tls_file(tls: dict[str, Any], key: str, base: Path, problems: list[str]) -> Path | None:
    """The path of a TLS file, relative to the web config's directory, checked to be readable and bounded
    (a certificate path pointing at /dev/zero fails here, not inside OpenSSL)."""
    value = tls.get(key)
    if not isinstance(value, str) or not value:
        problems.append(f"tls_server_config.{key}: expected a file path")
        return None
    path = base / value
    try:
        with open(path, "rb") as handle:
            size = len(handle.read(MAX_TLS_FILE_BYTES + 1))
    except OSError as err:
        problems.append(f"tls_server_config.{key}: cannot read {str(path)!r}: {err.strerror or err}")
        return None
    if size > MAX_TLS_FILE_BYTES:
        problems.append(f"tls_server_config.{key}: {str(path)!r} is larger than 1 MiB, the limit for this file")
        return None
    return path


def _tls_context(tls: Any, base: Path, problems: list[str]) -> ssl.SSLContext | None:
    if not tls:
        return None
    if not isinstance(tls, dict):
        problems.append("tls_server_config: expected a mapping")
        return None
    for key in tls:
        if key not in _TLS_KEYS:
            problems.append(f"tls_server_config.{str(key)[:60]}: unknown or unsupported key "
                            f"(supported: {', '.join(_TLS_KEYS)})")
    if not tls.get("cert_file") or not tls.get("key_file"):
        problems.append("tls_server_config: cert_file and key_file are both required")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in tls:
            version = tls[key]
            if not isinstance(version, str) or version not in _TLS_VERSIONS:
                problems.append(f"tls_server_config.{key}: must be one of {', '.join(_TLS_VERSIONS)}")
            else:
                setattr(context, attr, _TLS_VERSIONS[version])
    cert = _tls_file(tls, "cert_file", base, problems)
    key = _tls_file(tls, "key_file", base, problems)
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as err:
            problems.append(f"tls_server_config: cannot load cert_file {str(cert)!r} / key_file {str(key)!r}: "
                            f"{getattr(err, 'strerror', None) or err}")
    auth_type = tls.get("client_auth_type") or ("RequireAndVerifyClientCert" if tls.get("client_ca_file")
                                                else "NoClientCert")
    if not isinstance(auth_type, str) or auth_type not in _CLIENT_AUTH:
        problems.append(f"tls_server_config.client_auth_type: {str(auth_type)[:60]!r} is not supported "
                        f"(use one of {', '.join(_CLIENT_AUTH)})")
        return context
    context.verify_mode = _CLIENT_AUTH[auth_type]
    if auth_type != "NoClientCert":
        if not tls.get("client_ca_file"):
            problems.append(f"tls_server_config.client_ca_file: required with client_auth_type {auth_type}")
        elif (ca := _tls_file(tls, "client_ca_file", base, problems)) is not None:
            try:
                context.load_verify_locations(cafile=str(ca))
            except (OSError, ssl.SSLError) as err:
                problems.append(f"tls_server_config.client_ca_file: cannot load {str(ca)!r}: "
                                f"{getattr(err, 'strerror', None) or err}")
    return context
