"""``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

Supported: ``tls_server_config`` (cert_file, key_file, client_ca_file, client_auth_type, min_version,
max_version) and ``basic_auth_users`` (bcrypt hashes). Anything else is refused by name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from exporter.config import ConfigError

_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version")
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Used so that an unknown user costs as much as a wrong password: no user-name oracle.
_DUMMY_HASH = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds=10))


@dataclass
class BasicAuth:
    users: dict[str, bytes] = field(repr=False)
    _verified: set[bytes] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self, header: str | None) -> bool:
        """True if the Authorization header carries a known user and the right password."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        # bcrypt is slow by design; remember successes (keyed by a digest, never the password itself).
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            if hashed is not None and key in self._verified:
                return True
        ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH) and hashed is not None
        if ok:
            with self._lock:
                self._verified.add(key)
        return ok


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    basic_auth: BasicAuth | None = None


def load_web_config(path: str | None) -> WebConfig:
    if not path:
        return WebConfig()
    source = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(source, [f"cannot read web config file: {err.strerror or err}"]) from None
    except yaml.YAMLError as err:
        raise ConfigError(source, [f"invalid YAML: {err}"]) from None
    if not isinstance(doc, dict):
        raise ConfigError(source, ["expected a mapping at the top level"])
    problems: list[str] = []
    for key in doc:
        if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            problems.append(f"{key}: unknown key (supported: tls_server_config, basic_auth_users)")
    if doc.get("http_server_config"):
        problems.append("http_server_config: not supported by this exporter")
    auth = _basic_auth(doc.get("basic_auth_users"), problems)
    context = _tls_context(doc.get("tls_server_config"), Path(path).parent, problems)
    if problems:
        raise ConfigError(source, problems)
    return WebConfig(context, auth)


def _is_bcrypt_hash(hashed: bytes) -> bool:
    if not hashed.startswith((b"$2a$", b"$2b$", b"$2y$")):
        return False
    try:
        bcrypt.checkpw(b"", hashed)  # raises on a truncated or otherwise malformed hash
    except ValueError:
        return False
    return True


def _basic_auth(users: Any, problems: list[str]) -> BasicAuth | None:
    if not users:
        return None
    if not isinstance(users, dict):
        problems.append("basic_auth_users: expected a mapping of user name to bcrypt hash")
        return None
    hashes: dict[str, bytes] = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not _is_bcrypt_hash(hashed.encode()):
            problems.append(f"basic_auth_users.{user}: not a bcrypt hash (generate one with htpasswd -nBC 10)")
            continue
        hashes[str(user)] = hashed.encode()
    return BasicAuth(hashes)


def _tls_context(tls: Any, base: Path, problems: list[str]) -> ssl.SSLContext | None:
    if not tls:
        return None
    if not isinstance(tls, dict):
        problems.append("tls_server_config: expected a mapping")
        return None
    for key in tls:
        if key not in _TLS_KEYS:
            problems.append(f"tls_server_config.{key}: unknown or unsupported key (supported: {', '.join(_TLS_KEYS)})")
    if not tls.get("cert_file") or not tls.get("key_file"):
        problems.append("tls_server_config: cert_file and key_file are both required")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in tls:
            if tls[key] not in _TLS_VERSIONS:
                problems.append(f"tls_server_config.{key}: must be one of {', '.join(_TLS_VERSIONS)}")
            else:
                setattr(context, attr, _TLS_VERSIONS[tls[key]])
    cert, key = base / str(tls["cert_file"]), base / str(tls["key_file"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        problems.append(f"tls_server_config: cannot load cert_file {str(cert)!r} / key_file {str(key)!r}: "
                        f"{getattr(err, 'strerror', None) or err}")
    auth_type = tls.get("client_auth_type") or ("RequireAndVerifyClientCert" if tls.get("client_ca_file")
                                                else "NoClientCert")
    if auth_type not in _CLIENT_AUTH:
        problems.append(f"tls_server_config.client_auth_type: {auth_type!r} is not supported "
                        f"(use one of {', '.join(_CLIENT_AUTH)})")
        return context
    context.verify_mode = _CLIENT_AUTH[auth_type]
    if auth_type != "NoClientCert":
        if not tls.get("client_ca_file"):
            problems.append(f"tls_server_config.client_ca_file: required with client_auth_type {auth_type}")
        else:
            ca = base / str(tls["client_ca_file"])
            try:
                context.load_verify_locations(cafile=str(ca))
            except (OSError, ssl.SSLError) as err:
                problems.append(f"tls_server_config.client_ca_file: cannot load {str(ca)!r}: "
                                f"{getattr(err, 'strerror', None) or err}")
    return context
