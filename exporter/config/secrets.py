"""Credentials in the config: read once per load, never echoed, refused when they cannot be a real credential.

A value under a secret key (api_token, api_key, api_email) is never shown in a message, whatever is wrong with
it, nor is a secret file's content.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from exporter.config.files import FileProblem, read_text_file
from exporter.config.model import Credentials
from exporter.config.values import Invalid, show, string
from exporter.config.walker import Walker

CREDENTIAL_KEYS = ("api_token", "api_token_file", "api_email", "api_key", "api_key_file")
MAX_SECRET_FILE_BYTES = 64 << 10  # 64 KiB: a Cloudflare token is 40 bytes
MIN_SECRET_LENGTH = 8  # see secret_problem: a shorter "token" could be an ordinary word, unsafe to mask


def secret_problem(secret: str, kind: str) -> str | None:
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


def email_problem(email: str) -> str | None:
    if not all(" " < c < "\x7f" for c in email) or "@" not in email.strip("@"):
        return "expected the e-mail address of the Cloudflare user (printable ASCII with an @, no spaces)"
    return None


def _problem(value: str, kind: str) -> str | None:
    return email_problem(value) if kind == "e-mail" else secret_problem(value, kind)


def secret_value(kind: str) -> Callable[[Any], str]:
    """An inline secret: type errors and plausibility problems are reported without the value."""

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {type(value).__name__} (value not shown: it is a secret)")
        if value and (problem := _problem(value, kind)):
            raise Invalid(f"{problem} (value not shown)")
        return value

    return parse


def secret_file(kind: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        path = string(value)
        try:
            secret = read_text_file(path, MAX_SECRET_FILE_BYTES, f"secret file {show(path, 4096)}").rstrip("\r\n")
        except FileProblem as err:
            raise Invalid(str(err)) from None
        if not secret:
            raise Invalid(f"secret file {show(path, 4096)} is empty")
        problem = secret_problem(secret, kind)
        if problem:
            verb = problem if problem.split(" ", 1)[0] in ("starts", "contains") else "is " + problem
            raise Invalid(f"the {kind} in secret file {show(path, 4096)} {verb}")
        return secret

    return parse


def credentials(walk: Walker, doc: dict[str, Any], path: str) -> tuple[Credentials | None, bool]:
    """(credentials set at this level or None when it sets none, whether a credential key here is broken).

    Which keys are set decides the combination checks, not whether their values could be read, so an
    unreadable file is one problem, not also a missing or empty key."""
    before = len(walk.problems)
    token = walk.value(doc, path, "api_token", secret_value("API token"), None)
    token_file = walk.value(doc, path, "api_token_file", secret_file("API token"), None)
    email = walk.value(doc, path, "api_email", secret_value("e-mail"), None)
    key = walk.value(doc, path, "api_key", secret_value("Global API Key"), None)
    key_file = walk.value(doc, path, "api_key_file", secret_file("Global API Key"), None)
    set_keys = {k for k in CREDENTIAL_KEYS if doc.get(k) not in (None, "")}
    spoiled = {k for k in CREDENTIAL_KEYS if f"{path}.{k}" in walk.spoiled_paths}
    if not set_keys:
        return None, bool(spoiled)
    if {"api_token", "api_token_file"} <= set_keys:
        walk.problems.append(f"{path}: set api_token or api_token_file, not both")
    if {"api_key", "api_key_file"} <= set_keys:
        walk.problems.append(f"{path}: set api_key or api_key_file, not both")
    has_token = bool(set_keys & {"api_token", "api_token_file"})
    has_key = bool(set_keys & {"api_key", "api_key_file"})
    has_email = "api_email" in set_keys
    if has_token and (has_key or has_email):
        walk.problems.append(f"{path}: set either an API token or api_email + api_key, not both")
    elif not has_token and has_email != has_key and not spoiled:
        missing = "api_key (or api_key_file)" if has_email else "api_email"
        walk.problems.append(f"{path}: {missing} is missing: the Global API Key needs both")
    if len(walk.problems) > before or spoiled:
        return None, True
    return Credentials(api_token=token or token_file or None, api_email=email or None,
                       api_key=key or key_file or None), False


def credentials_from_env(walk: Walker, environ: Mapping[str, str]) -> Credentials | None:
    def checked(name: str, kind: str) -> str | None:
        value = environ.get(name) or None
        if value is not None and (problem := _problem(value, kind)):
            walk.problems.append(f"{name} (environment variable): {problem} (value not shown)")
            return None
        return value

    if environ.get("CLOUDFLARE_API_TOKEN"):
        token = checked("CLOUDFLARE_API_TOKEN", "API token")
        return Credentials(api_token=token) if token else None
    if environ.get("CLOUDFLARE_API_KEY") and environ.get("CLOUDFLARE_EMAIL"):
        key, email = checked("CLOUDFLARE_API_KEY", "Global API Key"), checked("CLOUDFLARE_EMAIL", "e-mail")
        return Credentials(api_email=email, api_key=key) if key and email else None
    return None
