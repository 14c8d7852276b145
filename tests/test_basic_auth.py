"""Basic auth and the web config file, in-process: any header gives a yes or a no (never an exception), a
failed login takes as long for an unknown user as for a wrong password, and a hostile web config file is a
ConfigError naming the file."""

from __future__ import annotations

import base64
import statistics
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from exporter.config.model import ConfigError
from exporter.webconfig import AUTH_CACHE_SECONDS, AUTH_CACHE_SIZE, BasicAuth, load_web_config

USER, PASSWORD = "alice", "pw-correct-horse-battery"


def basic(user: str | bytes, password: str | bytes) -> str:
    raw = (user if isinstance(user, bytes) else user.encode()) + b":" + (
        password if isinstance(password, bytes) else password.encode())
    return "Basic " + base64.b64encode(raw).decode()


def hashed(password: str | bytes, cost: int) -> bytes:
    return bcrypt.hashpw(password if isinstance(password, bytes) else password.encode(), bcrypt.gensalt(cost))


@pytest.fixture(scope="module")
def auth() -> BasicAuth:
    return BasicAuth({USER: hashed(PASSWORD, 4), "long": hashed("x" * 72, 4), "ünï": hashed("pässwörd", 4)})


HOSTILE_HEADERS: list[str | None] = [
    None, "", " ", "Basic", "Basic ", "Basic    ", "Basic !!!not-base64", "Basic YWxpY2U=",  # no colon
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
    "Basic Zm9v\u00e9", "Basic \u00e9\u00e9\u00e9\u00e9", "B\u00e4sic abc", "Basic " + "\u2603" * 10,  # non-ASCII
    "Basic YWxp Y2U6cHc=", "Basic YWxpY2U6cHc", "Basic =" * 3, "Bearer " + PASSWORD, "Digest a=b",
    basic(USER, "x" * 10_000), basic(USER, "p\x00w"), basic(USER, PASSWORD + "\x00"), basic("", ""),
    basic(":", ":"), basic(USER, "\udcff".encode("utf-8", "surrogatepass")),
    "Basic " + "A" * 100_000, "basic " + base64.b64encode(b"alice:" + b"\xc3" * 5).decode(),
]


@pytest.mark.parametrize("header", HOSTILE_HEADERS, ids=range(len(HOSTILE_HEADERS)))
def test_any_header_gives_yes_or_no_never_an_exception(auth: BasicAuth, header: str | None) -> None:
    assert auth.check(header) is False


def test_right_passwords_pass_in_any_scheme_spelling(auth: BasicAuth) -> None:
    assert auth.check(basic(USER, PASSWORD))
    assert auth.check(basic(USER, PASSWORD).replace("Basic", "basic"))  # RFC 7617: the scheme is case-insensitive
    assert auth.check("  " + basic(USER, PASSWORD) + "  ")
    assert auth.check(basic("ünï", "pässwörd"))
    assert not auth.check(basic(USER, PASSWORD.upper()))
    assert not auth.check(basic(USER.upper(), PASSWORD))


def test_passwords_over_72_bytes_count_their_first_72_like_htpasswd(auth: BasicAuth) -> None:
    # bcrypt itself refuses them (ValueError: that was a dropped connection); htpasswd (which hashes the first
    # 72 bytes of a longer password, as the fixture does) and the exporter-toolkit
    # use the first 72 bytes, so a long password made with htpasswd keeps working.
    assert auth.check(basic("long", "x" * 80))
    assert auth.check(basic("long", "x" * 72 + "anything"))
    assert not auth.check(basic("long", "x" * 71))
    assert not auth.check(basic(USER, PASSWORD + "y" * 100))


def test_success_and_failure_are_cached_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        calls.append(password)
        return real(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    auth = BasicAuth({USER: hashed(PASSWORD, 4)}, clock=lambda: now[0])
    for _ in range(5):  # a scrape every 15 s within the cache time costs one bcrypt
        assert auth.check(basic(USER, PASSWORD))
        assert not auth.check(basic(USER, "wrong-password"))
        assert not auth.check(basic("mallory", PASSWORD))
        now[0] += AUTH_CACHE_SECONDS / 5 - 0.1
    assert len(calls) == 3
    now[0] += 1
    assert auth.check(basic(USER, PASSWORD))
    assert len(calls) == 4
    # A cached success never lets a different password in, and the cache stays bounded.
    assert not auth.check(basic(USER, PASSWORD + "x"))
    for i in range(AUTH_CACHE_SIZE * 2):
        auth.check(basic("mallory", f"guess-{i}"))
    assert len(auth._cache) == AUTH_CACHE_SIZE


def seconds(auth: BasicAuth, header: str) -> float:
    started = time.perf_counter()
    assert not auth.check(header)
    return time.perf_counter() - started


@pytest.mark.parametrize(("cost", "tolerance"), [(10, 1.25), (5, 2.0)])
def test_unknown_user_takes_as_long_as_a_wrong_password(cost: int, tolerance: float) -> None:
    """The issue's measurement: with htpasswd's default cost 5 an unknown user took 57 ms and a wrong password
    3.5 ms (16 times longer). Tries interleaved, each with a new password (no cache hit), medians compared:
    robust on a noisy shared machine. At cost 5 a try takes 2 ms, so the noise is relatively larger."""
    auth = BasicAuth({USER: hashed(PASSWORD, cost)})
    tries = 9 if cost >= 10 else 41
    ratios = []
    for attempt in range(3):  # the best of three rounds: one noisy round must not fail the test
        unknown: list[float] = []
        wrong: list[float] = []
        for i in range(tries):  # alternating which goes first, so neither absorbs more of the noise
            pair = [(unknown, basic("mallory", f"guess-{attempt}-{i}")), (wrong, basic(USER, f"guess-{attempt}-{i}"))]
            for times, header in pair if i % 2 else reversed(pair):
                times.append(seconds(auth, header))
        ratios.append(statistics.median(unknown) / statistics.median(wrong))
        if 1 / tolerance < ratios[-1] < tolerance:
            break
    assert any(1 / tolerance < r < tolerance for r in ratios), ratios


def test_mixed_costs_are_warned_about_and_unknown_users_cost_the_most(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  a: '{hashed('a-pw', 4).decode()}'\n  b: '{hashed('b-pw', 6).decode()}'\n")
    config = load_web_config(str(path))
    assert config.warnings and "different bcrypt costs (4, 6)" in config.warnings[0]
    assert config.basic_auth is not None and config.basic_auth._dummy.startswith(b"$2b$06$")
    path.write_text(f"basic_auth_users:\n  a: '{hashed('a-pw', 4).decode()}'\n")
    assert load_web_config(str(path)).warnings == ()


# --------------------------------------------------------------------------------------------------------
# The web config file
# --------------------------------------------------------------------------------------------------------


def web_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_web_config(str(path))
    assert err.value.source == str(path)
    return err.value.problems


@pytest.mark.parametrize(("content", "expected"), [
    (b"basic_auth_users:\n  al\xffice: x\n", "web config file is not UTF-8 text (invalid byte at offset 22)"),
    (b"a: " + b"9" * 5000 + b"\n", "invalid YAML: a value cannot be converted"),
    (b"[" * 2_000, "invalid YAML: nested too deeply"),
    (b"# " + b"x" * (1 << 20) + b"\n", "web config file is larger than 1 MiB, the limit for this file"),
    (b"tls_server_config: [unclosed\n", "invalid YAML at line 2"),
])
def test_hostile_web_config_file_is_a_config_error(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "web.yml"
    path.write_bytes(content)
    found = web_problems(path)
    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize(("doc", "expected"), [
    ({"tls_server_config": {"cert_file": "/dev/zero", "key_file": "/dev/zero"}},
     "tls_server_config.cert_file: '/dev/zero' is larger than 1 MiB, the limit for this file"),
    ({"tls_server_config": {"cert_file": ["a"], "key_file": "k"}}, "tls_server_config.cert_file: expected a file"),
    ({"tls_server_config": {"cert_file": "c", "key_file": "k", "min_version": ["TLS12"]}},
     "tls_server_config.min_version: must be one of"),
    ({"tls_server_config": {"cert_file": "c", "key_file": "k", "client_auth_type": {"a": 1}}},
     "tls_server_config.client_auth_type: "),
    ({"basic_auth_users": {"alice": "$2b$31$" + "a" * 53}}, "basic_auth_users.alice: bcrypt cost 31 is outside"),
    ({"basic_auth_users": {"alice": "$2b$03$" + "a" * 53}}, "basic_auth_users.alice: bcrypt cost 3 is outside"),
    ({"basic_auth_users": {"alice": "$2b$10$" + "!" * 53}}, "basic_auth_users.alice: not a bcrypt hash"),
    ({"basic_auth_users": {"alice": "$2b$10$" + "a" * 53}}, "basic_auth_users.alice: not a valid"),
    ({"basic_auth_users": {"alice": 12345}}, "basic_auth_users.alice: not a bcrypt hash"),
    ({"basic_auth_users": {"al:ice": "$2b$04$" + "a" * 53}}, "basic_auth_users.al:ice: a user name cannot"),
])
def test_bad_web_config_values_are_refused_fast(tmp_path: Path, doc: dict[str, Any], expected: str) -> None:
    import yaml

    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(doc))
    started = time.monotonic()
    found = web_problems(path)
    assert time.monotonic() - started < 2
    assert any(p.startswith(expected) for p in found), found


def test_high_cost_hash_loads_without_paying_its_cost(tmp_path: Path) -> None:
    # A cost-17 hash (htpasswd's maximum) takes ~10 s per check here: loading it must not check it.
    salt = bcrypt.gensalt(17)
    good_looking = salt + hashed("pw", 4)[29:]
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{good_looking.decode()}'\n")
    started = time.monotonic()
    config = load_web_config(str(path))
    assert time.monotonic() - started < 1
    assert config.basic_auth is not None and config.basic_auth._dummy.startswith(b"$2b$17$")
