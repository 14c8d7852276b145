"""What a user of ``--web.config.file`` and of secret credentials notices, against the real exporter process.

TLS (server certificate, client certificates), bcrypt basic auth, refused web configs, and that no
credential ever shows up in logs, pages, reload answers or ``--config.check`` output.

Certificates are made with the ``openssl`` command line in a temporary directory: a throwaway CA, a server
certificate for IP 127.0.0.1, a client certificate, and a second ("rogue") CA with its own client
certificate that the exporter must not trust.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from exporter.web.listening import ListenAddress, WebServers
from exporter.web.routes import Response, RouteHandler
from exporter.web.send import batches, send_buffers
from exporter.webconfig import WebConfig
from tests.conftest import TOKEN, require_binary
from tests.fakeapi import FakeCloudflareAPI, Fault, invoice
from tests.support import INVOICE_HISTORY_ONLY, REPO, ExporterProcess, free_port, value, wait_for

pytestmark = pytest.mark.e2e

ACC = "023e105f4ecef8ad9ca31a8372d0c353"
ACC2 = "1b7e4d2c9a0f4e6b8d3c5a7f9e1b2d40"
NOW = int(time.time())
METRIC_PREFIX = "cloudflare_ai_gateway_"
POLL_SUCCESS = "cloudflare_ai_gateway_poll_success"

USER, PASSWORD = "alice", "pw-SECRET-correct-horse-battery"
USER_2Y, PASSWORD_2Y = "bob", "pw-SECRET-bob-htpasswd-2y"

# Distinctive secrets for the leak tests: any appearance anywhere is a leak.
SECRET_TOKEN = "tok-SECRET-1234567890abcdef"
SECRET_KEY = "key-SECRET-0fedcba987654321"
API_EMAIL = "billing@example.com"


# --------------------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_crt: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    rogue_client_crt: Path  # signed by a CA the exporter does not trust
    rogue_client_key: Path


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, f"openssl {' '.join(args)} failed:\n{result.stderr}"


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    _openssl(directory, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return directory / f"{name}.crt", directory / f"{name}.key"


def _make_leaf(directory: Path, name: str, ca: str, serial: int, extensions: str) -> tuple[Path, Path]:
    (directory / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + extensions)
    _openssl(directory, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-set_serial", str(serial), "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext")
    return directory / f"{name}.crt", directory / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    require_binary("openssl")
    directory = tmp_path_factory.mktemp("pki")
    ca_crt, _ = _make_ca(directory, "ca")
    _make_ca(directory, "rogue-ca")
    server_crt, server_key = _make_leaf(directory, "server", "ca", 1001,
                                        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
    client_crt, client_key = _make_leaf(directory, "client", "ca", 1002, "extendedKeyUsage=clientAuth\n")
    rogue_crt, rogue_key = _make_leaf(directory, "rogue-client", "rogue-ca", 1003, "extendedKeyUsage=clientAuth\n")
    return Pki(ca_crt, server_crt, server_key, client_crt, client_key, rogue_crt, rogue_key)


def client_tls(pki: Pki, cert: tuple[Path, Path] | None = None, trust_ca: bool = True) -> ssl.SSLContext:
    """What a scraper uses: trusts our CA (or only the system CAs), optionally presents a client cert."""
    context = ssl.create_default_context(cafile=str(pki.ca_crt)) if trust_ca else ssl.create_default_context()
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def test_a_large_answer_goes_out_whole_and_in_order_over_tls(pki: Pki) -> None:
    """A TLS socket has no sendmsg: the server joins each batch of kept blocks and sends it."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(pki.server_crt), str(pki.server_key))
    chunks: list[bytes | memoryview] = [f"block {n}\n".encode() * (n * 97 % 9000 + 1) for n in range(600)]
    chunks.insert(300, memoryview(b"one account of many invoices\n" * 40000)[5:])
    ours, theirs = socket.socketpair()
    received: list[bytes] = []

    def read() -> None:
        with client_tls(pki).wrap_socket(theirs, server_hostname="127.0.0.1") as tls:
            while chunk := tls.recv(1 << 16):
                received.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with server_context.wrap_socket(ours, server_side=True) as tls:
        for batch in batches(chunks):
            send_buffers(tls, batch, time.monotonic() + 30)
    reader.join(timeout=30)
    assert b"".join(received) == b"".join(chunks)


def test_plain_http_on_the_tls_port_gets_400_in_plain_http(pki: Pki) -> None:
    """The first byte is no TLS handshake: the client is told in words it can read, the port still serves TLS."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(pki.server_crt), str(pki.server_key))

    class App:
        routes: Mapping[str, Mapping[str, RouteHandler]] = {"/metrics": {"GET": lambda _: Response(200, b"up 1\n")}}

        def web_config(self) -> WebConfig:
            return WebConfig(ssl_context=server_context)

    servers = WebServers(App(), [ListenAddress("127.0.0.1", 0, socket.AF_INET)])
    servers.start()
    try:
        host, port = servers.bound[0].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close\r\n" in answer
        assert answer.endswith(b"\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
        assert httpx.get(f"https://{servers.bound[0]}/metrics", verify=client_tls(pki), timeout=5).text == "up 1\n"
    finally:
        servers.shutdown()


# --------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------


def config_for(api: FakeCloudflareAPI, token: str = TOKEN, accounts: list[dict[str, Any]] | None = None,
               **cloudflare: Any) -> dict[str, Any]:
    return {
        "cloudflare": {"base_url": api.base_url, "api_token": token, "requests_per_second": 50,
                       "max_retries": 0, "timeout": "2s", **cloudflare},
        "poll": {"interval": "1s"},
        "accounts": accounts or [{"id": ACC, "name": "prod"}],
        "collectors": INVOICE_HISTORY_ONLY,
    }


@pytest.fixture
def api(fake_api: FakeCloudflareAPI) -> FakeCloudflareAPI:
    fake_api.add_account(ACC, "prod", [invoice(id="in_open", amount_due=1234, created=NOW - 86400)])
    return fake_api


Probe = Callable[[ExporterProcess], bool]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., ExporterProcess]]:
    """Start the real exporter; wait until ``probe`` (not the plain-http one of tests/support.py) says it
    is up. Every process is stopped at teardown."""
    started: list[ExporterProcess] = []

    def start(config: dict[str, Any], *args: str, probe: Probe, timeout: float = 20.0) -> ExporterProcess:
        workdir = tmp_path / f"exporter{len(started)}"
        workdir.mkdir()
        proc = ExporterProcess(config, args, None, workdir)
        started.append(proc)

        def up() -> bool:
            if proc.proc.poll() is not None:
                raise AssertionError(f"exporter exited with {proc.proc.returncode}:\n{proc.output()}")
            try:
                return probe(proc)
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, interval=0.1, what="exporter up")
        return proc

    yield start
    for proc in started:
        proc.stop()


def https_url(proc: ExporterProcess, path: str) -> str:
    return f"https://{proc.address}{path}"


def https_get(proc: ExporterProcess, path: str, verify: ssl.SSLContext, **kwargs: Any) -> httpx.Response:
    return httpx.get(https_url(proc, path), verify=verify, timeout=5, **kwargs)


def ready_over_https(verify: ssl.SSLContext, auth: tuple[str, str] | None = None) -> Probe:
    return lambda proc: https_get(proc, "/-/ready", verify, auth=auth).status_code == 200


def ready_over_http(auth: tuple[str, str] | None = None) -> Probe:
    return lambda proc: proc.get("/-/ready", auth=auth).status_code == 200


def write_web_config(directory: Path, doc: dict[str, Any], name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(doc))
    return path


def tls_config(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"cert_file": str(pki.server_crt), "key_file": str(pki.server_key), **extra}


def assert_refused(request: Callable[[], httpx.Response]) -> None:
    """The request must not get an answer at all (a TLS or connection error), let alone metrics."""
    try:
        response = request()
    except httpx.TransportError:
        return
    raise AssertionError(f"expected a TLS/connection failure, got HTTP {response.status_code}: "
                         f"{response.text[:200]!r}")


def assert_has_metrics(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert value(response.text, POLL_SUCCESS, account_id=ACC) == 1.0, response.text


# --------------------------------------------------------------------------------------------------------
# 1. TLS
# --------------------------------------------------------------------------------------------------------


def test_tls_serves_https_and_no_plain_http(api: FakeCloudflareAPI, pki: Pki, tmp_path: Path,
                                             launch: Callable[..., ExporterProcess]) -> None:
    # Relative cert paths resolve against the web config's directory, as in the exporter-toolkit.
    web_dir = tmp_path / "web"
    web_dir.mkdir()
    shutil.copy(pki.server_crt, web_dir / "tls.crt")
    shutil.copy(pki.server_key, web_dir / "tls.key")
    web = write_web_config(web_dir, {"tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"}})
    verify = client_tls(pki)
    proc = launch(config_for(api), "--web.config.file", str(web), probe=ready_over_https(verify))

    assert_has_metrics(https_get(proc, "/metrics", verify))
    landing = https_get(proc, "/", verify)
    assert landing.status_code == 200 and "prod" in landing.text
    assert https_get(proc, "/-/healthy", verify).status_code == 200

    # Plain http on the TLS port: no metrics, whatever comes back.
    try:
        plain = httpx.get(f"http://{proc.address}/metrics", timeout=5)
    except httpx.TransportError:
        pass
    else:
        assert plain.status_code != 200 and METRIC_PREFIX not in plain.text, plain.text[:300]
    # A scraper that does not trust our CA is refused by its own TLS check.
    with pytest.raises(httpx.ConnectError):
        https_get(proc, "/metrics", client_tls(pki, trust_ca=False))
    # The plain-http attempt did not hurt the server.
    assert_has_metrics(https_get(proc, "/metrics", verify))
    assert proc.proc.poll() is None
    assert "Traceback" not in proc.output()
    started = [line for line in proc.output().splitlines() if "exporter started" in line]
    assert started and "tls=true" in started[0], proc.output()


# --------------------------------------------------------------------------------------------------------
# 2. Client certificates
# --------------------------------------------------------------------------------------------------------


def test_require_and_verify_client_cert(api: FakeCloudflareAPI, pki: Pki, tmp_path: Path,
                                        launch: Callable[..., ExporterProcess]) -> None:
    web = write_web_config(tmp_path, {"tls_server_config": tls_config(
        pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(pki.ca_crt))})
    with_cert = client_tls(pki, (pki.client_crt, pki.client_key))
    proc = launch(config_for(api), "--web.config.file", str(web), probe=ready_over_https(with_cert))

    assert_has_metrics(https_get(proc, "/metrics", with_cert))
    assert_refused(lambda: https_get(proc, "/metrics", client_tls(pki)))
    assert_refused(lambda: https_get(proc, "/metrics", client_tls(pki, (pki.rogue_client_crt,
                                                                         pki.rogue_client_key))))
    # Refused handshakes leave the server working.
    assert_has_metrics(https_get(proc, "/metrics", with_cert))
    assert "Traceback" not in proc.output()


def test_verify_client_cert_if_given(api: FakeCloudflareAPI, pki: Pki, tmp_path: Path,
                                     launch: Callable[..., ExporterProcess]) -> None:
    web = write_web_config(tmp_path, {"tls_server_config": tls_config(
        pki, client_auth_type="VerifyClientCertIfGiven", client_ca_file=str(pki.ca_crt))})
    without_cert = client_tls(pki)
    proc = launch(config_for(api), "--web.config.file", str(web), probe=ready_over_https(without_cert))

    assert_has_metrics(https_get(proc, "/metrics", without_cert))
    assert_has_metrics(https_get(proc, "/metrics", client_tls(pki, (pki.client_crt, pki.client_key))))
    # "If given" still means verified: a certificate from an unknown CA is refused.
    assert_refused(lambda: https_get(proc, "/metrics", client_tls(pki, (pki.rogue_client_crt,
                                                                         pki.rogue_client_key))))


# --------------------------------------------------------------------------------------------------------
# 3. Basic auth
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    alice = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    # htpasswd -nBC 10 writes the $2y$ variant: it must work just the same.
    bob = bcrypt.hashpw(PASSWORD_2Y.encode(), bcrypt.gensalt(rounds=10)).decode().replace("$2b$", "$2y$", 1)
    return {USER: alice, USER_2Y: bob}


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.status_code, response.text[:300])
    assert response.headers.get("WWW-Authenticate", "").startswith("Basic "), response.headers
    assert METRIC_PREFIX not in response.text
    assert "prod" not in response.text and ACC not in response.text


def test_basic_auth(api: FakeCloudflareAPI, tmp_path: Path, users: dict[str, str],
                    launch: Callable[..., ExporterProcess]) -> None:
    web = write_web_config(tmp_path, {"basic_auth_users": users})
    good = (USER, PASSWORD)
    proc = launch(config_for(api), "--web.config.file", str(web), "--log.level", "debug",
                  "--web.enable-lifecycle", probe=ready_over_http(good))

    for path in ("/metrics", "/", "/-/healthy", "/-/ready", "/nope"):
        assert_unauthorized(proc.get(path))
    assert_unauthorized(proc.get("/metrics", auth=(USER, "wrong-password")))
    assert_unauthorized(proc.get("/metrics", auth=(USER, "")))
    assert_unauthorized(proc.get("/metrics", auth=("mallory", PASSWORD)))
    assert_unauthorized(proc.get("/metrics", auth=(USER.upper(), PASSWORD)))
    assert_unauthorized(proc.get("/metrics", headers={"Authorization": "Basic !!!not-base64"}))
    assert_unauthorized(proc.get("/metrics", headers={"Authorization": f"Bearer {PASSWORD}"}))
    # A user's hash must not let another user's password in.
    assert_unauthorized(proc.get("/metrics", auth=(USER_2Y, PASSWORD)))

    assert_has_metrics(proc.get("/metrics", auth=good))
    assert_has_metrics(proc.get("/metrics", auth=(USER_2Y, PASSWORD_2Y)))
    landing = proc.get("/", auth=good)
    assert landing.status_code == 200 and "prod" in landing.text
    assert proc.get("/-/healthy", auth=good).status_code == 200
    # After a success (which may be cached), a wrong password is still refused.
    assert_unauthorized(proc.get("/metrics", auth=(USER, PASSWORD + "x")))

    # Reload is the one state-changing endpoint: it needs auth too.
    assert_unauthorized(httpx.post(f"{proc.url}/-/reload", timeout=10))
    assert_unauthorized(httpx.post(f"{proc.url}/-/reload", auth=(USER, "wrong-password"), timeout=10))
    assert "config reloaded" not in proc.output()
    reload = httpx.post(f"{proc.url}/-/reload", auth=good, timeout=10)
    assert reload.status_code == 200, reload.text
    wait_for(lambda: "config reloaded" in proc.output(), 5, what="'config reloaded' in the log")
    # ... and auth still holds after the reload.
    assert_unauthorized(proc.get("/metrics"))
    assert_has_metrics(proc.get("/metrics", auth=good))

    # Neither the passwords nor the Authorization header values reach the debug log.
    output = proc.output()
    assert "http request" in output, "expected debug request logs"
    for secret in (PASSWORD, PASSWORD_2Y, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()):
        assert secret not in output
    assert "Traceback" not in output


def test_hostile_authorization_headers_get_401_never_a_dropped_connection(
        api: FakeCloudflareAPI, tmp_path: Path, users: dict[str, str], launch: Callable[..., ExporterProcess]) -> None:
    web = write_web_config(tmp_path, {"basic_auth_users": users})
    good = (USER, PASSWORD)
    proc = launch(config_for(api), "--web.config.file", str(web), probe=ready_over_http(good))
    hostile: list[bytes] = [
        b"Basic " + base64.b64encode(f"{USER}:{'x' * 100}".encode()),  # over bcrypt's 72 bytes
        b"Basic " + base64.b64encode(f"mallory:{'x' * 100}".encode()),
        "Basic \u00e9\u00e9\u00e9\u00e9".encode("latin-1"),  # non-ASCII in the header
        b"Basic \xff\xfe\xfd\xfc", b"Basic " + base64.b64encode(b"\xff:\xfe"), b"Basic YWxpY2U=", b"Basic ",
        b"basic " + base64.b64encode(f"{USER}:wrong".encode()),
    ]
    for header in hostile:  # sent raw: an HTTP client library refuses to send some of these
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as conn:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + header
                         + b"\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.split(b"\r\n", 1)[0].endswith(b" 401 Unauthorized"), (header, answer[:300])
        assert METRIC_PREFIX.encode() not in answer
    # The scheme is case-insensitive (RFC 7617), and the server is still fine.
    lower = b"basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode())
    assert_has_metrics(proc.get("/metrics", headers={"Authorization": lower}))
    assert proc.proc.poll() is None
    assert "Traceback" not in proc.output(), proc.output()


def test_unauthorized_post_with_body_leaves_the_connection_usable(api: FakeCloudflareAPI, tmp_path: Path,
                                                                  users: dict[str, str],
                                                                  launch: Callable[..., ExporterProcess]) -> None:
    web = write_web_config(tmp_path, {"basic_auth_users": users})
    good = (USER, PASSWORD)
    proc = launch(config_for(api), "--web.config.file", str(web), probe=ready_over_http(good))
    with httpx.Client(timeout=5) as client:  # one keep-alive connection, as a scraper or a script uses
        assert_unauthorized(client.post(f"{proc.url}/-/reload", content=b'{"reason": "deploy"}'))
        response = client.get(f"{proc.url}/metrics", auth=good)
    assert_has_metrics(response)


def test_tls_and_basic_auth_together(api: FakeCloudflareAPI, pki: Pki, tmp_path: Path, users: dict[str, str],
                                     launch: Callable[..., ExporterProcess]) -> None:
    web = write_web_config(tmp_path, {"tls_server_config": tls_config(pki), "basic_auth_users": users})
    verify = client_tls(pki)
    good = (USER, PASSWORD)
    proc = launch(config_for(api), "--web.config.file", str(web), "--web.enable-lifecycle",
                  probe=ready_over_https(verify, good))

    assert_unauthorized(https_get(proc, "/metrics", verify))
    assert_unauthorized(https_get(proc, "/metrics", verify, auth=(USER, "wrong-password")))
    assert_has_metrics(https_get(proc, "/metrics", verify, auth=good))
    assert https_get(proc, "/-/healthy", verify, auth=good).status_code == 200
    assert_unauthorized(httpx.post(https_url(proc, "/-/reload"), verify=verify, timeout=10))
    assert httpx.post(https_url(proc, "/-/reload"), verify=verify, auth=good, timeout=10).status_code == 200
    # Even with the right password, plain http gets nothing.
    try:
        plain = httpx.get(f"http://{proc.address}/metrics", auth=good, timeout=5)
    except httpx.TransportError:
        pass
    else:
        assert METRIC_PREFIX not in plain.text, plain.text[:300]


# --------------------------------------------------------------------------------------------------------
# 4. Bad web configs are refused at start
# --------------------------------------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}, "PYTHONUNBUFFERED": "1"}


def run_to_exit(args: list[str], workdir: Path, timeout: float = 30.0) -> tuple[int, str]:
    """Run ``python -m exporter args``; (exit status, output). A process that starts serving instead of
    exiting is stopped at once and reported as status -1."""
    log_path = workdir / "run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", *args], cwd=REPO, env=_clean_env(),
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None:
                if "exporter started" in log_path.read_text(errors="replace") or time.monotonic() > deadline:
                    proc.terminate()
                    proc.wait(5)
                    return -1, log_path.read_text(errors="replace")
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    return int(proc.returncode), log_path.read_text(errors="replace")


BAD_WEB_CONFIGS: dict[str, tuple[str, list[str]]] = {
    # name: (web config YAML with {dir} and {hash} placeholders, words the message must contain)
    "missing cert file": ("tls_server_config:\n  cert_file: {dir}/missing.crt\n  key_file: {dir}/missing.key\n",
                          ["missing.crt", "cert_file"]),
    "unknown top-level key": ("basic_auth_users:\n  alice: '{hash}'\nbasic_auth_user:\n  bob: '{hash}'\n",
                              ["basic_auth_user:", "unknown"]),
    "unknown tls key": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  ca_file: {cert}\n",
                        ["tls_server_config.ca_file"]),
    "plain-text password instead of a hash": ("basic_auth_users:\n  alice: hunter2\n", ["alice", "bcrypt"]),
    "bad client_auth_type": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                             "  client_auth_type: RequireClientCert\n  client_ca_file: {cert}\n",
                             ["client_auth_type", "RequireClientCert"]),
    "client cert required but no client_ca_file": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n", ["client_ca_file"]),
    "key file is not a key": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {cert}\n", ["key_file"]),
    "not YAML": ("tls_server_config: [unclosed\n", ["YAML"]),
    "web config file missing": ("", ["cannot read"]),
    "certificate path is an endless device": ("tls_server_config:\n  cert_file: /dev/zero\n  key_file: {key}\n",
                                             ["tls_server_config.cert_file", "/dev/zero", "larger than 1 MiB"]),
    "hash with an absurd bcrypt cost": ("basic_auth_users:\n  alice: '$2b$31$" + "a" * 53 + "'\n",
                                        ["basic_auth_users.alice", "bcrypt cost 31"]),
}


@pytest.mark.parametrize("case", list(BAD_WEB_CONFIGS))
def test_bad_web_config_exits_1_naming_file_and_problem(case: str, api: FakeCloudflareAPI, pki: Pki,
                                                        tmp_path: Path, users: dict[str, str]) -> None:
    template, words = BAD_WEB_CONFIGS[case]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_for(api)))
    web = tmp_path / "web-config.yml"
    if case != "web config file missing":
        web.write_text(template.format(dir=tmp_path, cert=pki.server_crt, key=pki.server_key, hash=users[USER]))
    status, output = run_to_exit(["--config.file", str(config), "--web.listen-address",
                                  f"127.0.0.1:{free_port()}", "--web.config.file", str(web)], tmp_path)
    assert status == 1, f"expected exit 1, got {status}:\n{output}"
    assert str(web) in output, output
    for word in words:
        assert word in output, f"{word!r} not in:\n{output}"
    assert "Traceback" not in output, output


def test_malformed_bcrypt_hash_is_refused_at_start(api: FakeCloudflareAPI, tmp_path: Path) -> None:
    # A hash cut short while copying it: right prefix, wrong length. The exporter-toolkit refuses it at start
    # (bcrypt.Cost fails); accepting it turns every login of that user into a dropped connection.
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_for(api)))
    web = tmp_path / "web-config.yml"
    web.write_text("basic_auth_users:\n  alice: '$2b$10$kRZvBEjDoXaGmTL6KFdQ'\n")
    status, output = run_to_exit(["--config.file", str(config), "--web.listen-address",
                                  f"127.0.0.1:{free_port()}", "--web.config.file", str(web)], tmp_path)
    assert status == 1, f"expected exit 1, got {status}:\n{output}"
    assert str(web) in output and "alice" in output, output
    assert "Traceback" not in output, output


def test_web_config_that_is_not_utf8_is_refused_at_start_and_on_reload(
        api: FakeCloudflareAPI, tmp_path: Path, users: dict[str, str],
        launch: Callable[..., ExporterProcess]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_for(api)))
    web = tmp_path / "web-config.yml"
    web.write_bytes(b"basic_auth_users:\n  al\xffice: x\n")
    status, output = run_to_exit(["--config.file", str(config), "--web.listen-address",
                                  f"127.0.0.1:{free_port()}", "--web.config.file", str(web)], tmp_path)
    assert status == 1, f"expected exit 1, got {status}:\n{output}"
    assert f"{web}: web config file is not UTF-8 text" in output and "Traceback" not in output, output

    good = (USER, PASSWORD)
    write_web_config(tmp_path, {"basic_auth_users": users}, name="web-config.yml")
    proc = launch(config_for(api), "--web.config.file", str(web), probe=ready_over_http(good))
    web.write_bytes(b"basic_auth_users:\n  al\xffice: x\n")
    proc.signal(signal.SIGHUP)
    wait_for(lambda: "config reload failed" in proc.output(), 10, what="reload failure logged")
    assert proc.proc.poll() is None, proc.output()
    assert "web config file is not UTF-8 text" in proc.output() and "Traceback" not in proc.output()
    # The running web config (and its users) still holds.
    assert_unauthorized(proc.get("/metrics"))
    assert_has_metrics(proc.get("/metrics", auth=good))


# --------------------------------------------------------------------------------------------------------
# 5. No secret ever leaks
# --------------------------------------------------------------------------------------------------------

SECRETS = (SECRET_TOKEN, SECRET_KEY)
_LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log(output: str, fmt: str) -> list[dict[str, Any]]:
    """Every log line as a dict; asserts that each line is well-formed in the chosen format."""
    records = []
    for line in output.splitlines():
        if not line.strip():
            continue
        if fmt == "json":
            records.append(json.loads(line))
        else:
            pairs = _LOGFMT_PAIR.findall(line)
            assert pairs and " ".join(f"{k}={v}" for k, v in pairs) == line, f"not logfmt: {line!r}"
            records.append({k: json.loads(v) if v.startswith('"') else v for k, v in pairs})
    return records


@pytest.fixture
def secret_api() -> Iterator[FakeCloudflareAPI]:
    """A fake that accepts our distinctive secrets: the token for ``prod``, the key pair for ``legacy``."""
    fake = FakeCloudflareAPI(token=SECRET_TOKEN, api_email=API_EMAIL, api_key=SECRET_KEY)
    fake.add_account(ACC, "prod", [invoice(id="in_prod", amount_due=500, created=NOW - 86400)])
    fake.add_account(ACC2, "legacy", [invoice(id="in_legacy", amount_due=700, created=NOW - 86400)])
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def secret_config(api: FakeCloudflareAPI, key_file: Path) -> dict[str, Any]:
    return config_for(api, SECRET_TOKEN, [
        {"id": ACC, "name": "prod"},
        {"id": ACC2, "name": "legacy", "api_email": API_EMAIL, "api_key_file": str(key_file)},
    ])


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret {secret!r} leaked in {where}:\n{text}"
        # Also no recognisable half of it (a truncated or split echo).
        assert secret[4:-4] not in text, f"part of secret {secret!r} leaked in {where}:\n{text}"


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_no_secret_leaks(log_format: str, secret_api: FakeCloudflareAPI, tmp_path: Path,
                         launch: Callable[..., ExporterProcess]) -> None:
    key_file = tmp_path / "global-api-key"
    key_file.write_text(SECRET_KEY + "\n")
    # Every kind of failure, several echoing the secret the request carried.
    secret_api.inject(ACC,
                      Fault.api_error(code=8000, message=f"echo {SECRET_TOKEN}"),
                      Fault.server_error(),
                      Fault.api_error(code=10000, message=f"Authentication error for {SECRET_TOKEN}", status=403))
    secret_api.inject(ACC2,
                      Fault.api_error(code=8000, message=f"echo {SECRET_KEY} for {API_EMAIL}"),
                      Fault.api_error(code=10100, message=f"rate limited: {SECRET_KEY}", status=429),
                      Fault.invalid_json())
    # The token is revoked too; the fake serves queued faults before it checks credentials, so prod gets its
    # three faults and then 403 "Invalid API Token", while legacy (key pair) gets three faults, then succeeds.
    secret_api.revoke_token(SECRET_TOKEN)
    proc = launch(secret_config(secret_api, key_file), "--web.enable-lifecycle", "--log.level", "debug",
                  "--log.format", log_format,
                  probe=lambda p: p.get("/-/healthy").status_code == 200)

    def answered(account_id: str) -> list[int]:
        return [r.status for r in secret_api.requests_for(account_id) if r.status]

    wait_for(lambda: len(answered(ACC)) >= 4 and len(answered(ACC2)) >= 4, 15, what="faults consumed")
    assert answered(ACC)[3] == 403 and answered(ACC2)[3] == 200, (answered(ACC), answered(ACC2))
    wait_for(lambda: value(proc.metrics(), POLL_SUCCESS, account_id=ACC2) == 1.0, 5, what="legacy poll ok")
    assert value(proc.metrics(), POLL_SUCCESS, account_id=ACC) == 0.0

    assert_no_secret("/metrics", proc.metrics())
    landing = proc.get("/")
    assert landing.status_code == 200 and "failed" in landing.text
    assert_no_secret("the landing page", landing.text)

    # A bad reload of a config that still holds the secrets: refused, and the answer echoes no secret.
    broken = secret_config(secret_api, key_file)
    broken["cloudflare"]["api_tokn"] = SECRET_TOKEN  # typo'd key, secret value
    broken["accounts"].append({"id": "not-an-account-id", "name": "x", "api_token": SECRET_TOKEN})
    broken["poll"]["interval"] = "soon"
    proc.write_config(broken)
    reload = httpx.post(f"{proc.url}/-/reload", timeout=10)
    assert reload.status_code == 500, reload.text
    assert "api_tokn" in reload.text and "poll.interval" in reload.text, reload.text
    assert_no_secret("the reload response", reload.text)
    wait_for(lambda: "config reload failed" in proc.output(), 5, what="reload failure logged")
    # The old config keeps running.
    assert value(proc.metrics(), "cloudflare_ai_gateway_exporter_config_last_reload_successful") == 0.0
    assert proc.get("/-/healthy").status_code == 200

    output = proc.output()
    assert_no_secret("the logs", output)
    assert "Traceback" not in output
    records = parse_log(output, log_format)
    failures = [r for r in records if r.get("msg") == "poll failed"]
    reasons = {(r.get("account"), r.get("reason")) for r in failures}
    for expected in [("prod", "api_error"), ("prod", "server_error"), ("prod", "auth"),
                     ("legacy", "api_error"), ("legacy", "rate_limited"), ("legacy", "invalid_response")]:
        assert expected in reasons, f"no 'poll failed' log for {expected}; got {sorted(map(str, reasons))}"
    # The echoed secrets reached the log lines and were masked there, not silently dropped.
    echoed = [r for r in failures if "echo" in str(r.get("error", ""))]
    assert len(echoed) >= 2 and all("<secret>" in str(r["error"]) for r in echoed), echoed
    assert any(str(r.get("msg")).startswith("config reload failed") for r in records)


CHECK_CASES: dict[str, str] = {
    # name: config YAML; {token}, {key_file}, {base_url} are filled in
    "unknown key and bad account id": (
        "cloudflare:\n  base_url: {base_url}\n  api_token: {token}\n  timeout: forever\n"
        "poll:\n  intervall: 1m\n"
        "accounts:\n  - id: 023e105f4ecef8ad9ca31a8372d0c353\n  - id: nothex\n    api_token: {token}\n"
        "  - id: 1b7e4d2c9a0f4e6b8d3c5a7f9e1b2d40\n    api_email: billing@example.com\n"
        "    api_key_file: {key_file}\n    api_token: {token}\n"),
    "YAML syntax error on the secret's line": (
        "cloudflare:\n  api_token: {token}: oops\n  base_url: {base_url}\naccounts: [{{id: nothex}}]\n"),
    "YAML indentation error after the secret": (
        "cloudflare:\n  api_token: {token}\n    base_url: {base_url}\n"),
    "token written as a list, a map and a number": (
        "cloudflare:\n  api_token: [{token}]\naccounts:\n  - id: 023e105f4ecef8ad9ca31a8372d0c353\n"
        "    api_token: {{t: {token}}}\n  - id: 1b7e4d2c9a0f4e6b8d3c5a7f9e1b2d40\n    api_key: 98765432109876\n"
        "    api_email: [{key}]\n"),
    "token with a Bearer prefix, whitespace or a non-ASCII character": (
        "cloudflare:\n  api_token: Bearer {token}\naccounts:\n  - id: 023e105f4ecef8ad9ca31a8372d0c353\n"
        "    api_token: \"{token} {key}\"\n  - id: 1b7e4d2c9a0f4e6b8d3c5a7f9e1b2d40\n    api_token: {token}\u00e9\n"),
    "token and key both set": (
        "cloudflare:\n  api_token: {token}\n  api_email: billing@example.com\n  api_key: {key}\n"
        "accounts: ['023e105f4ecef8ad9ca31a8372d0c353']\n"),
}


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_config_check_never_prints_a_secret(case: str, tmp_path: Path) -> None:
    key_file = tmp_path / "global-api-key"
    key_file.write_text(SECRET_KEY + "\n")
    path = tmp_path / "config.yaml"
    path.write_text(CHECK_CASES[case].format(token=SECRET_TOKEN, key=SECRET_KEY, key_file=key_file,
                                             base_url="http://127.0.0.1:9/client/v4"))
    result = subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(path), "--config.check",
                             "--log.level", "debug"], cwd=REPO, env=_clean_env(), capture_output=True, text=True,
                            timeout=30, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert str(path) in output, output
    assert "Traceback" not in output, output
    assert_no_secret("--config.check output", output)


def test_config_check_ok_prints_no_secret(tmp_path: Path) -> None:
    key_file = tmp_path / "global-api-key"
    key_file.write_text(SECRET_KEY + "\n")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "cloudflare": {"api_token": SECRET_TOKEN},
        "accounts": [{"id": ACC}, {"id": ACC2, "api_email": API_EMAIL, "api_key_file": str(key_file)}],
    }))
    result = subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(path), "--config.check",
                             "--log.level", "debug"], cwd=REPO, env=_clean_env(), capture_output=True, text=True,
                            timeout=30, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "OK" in output, output
    assert_no_secret("--config.check output", output)
