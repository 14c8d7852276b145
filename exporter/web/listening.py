"""The addresses to listen on: parsing ``--web.listen-address``, binding, and one connection loop per address."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from exporter.web import limits
from exporter.web.connections import ConnectionLoop
from exporter.web.routes import WebApp


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int
    family: socket.AddressFamily

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == socket.AF_INET6 else f"{self.host}:{self.port}"


def parse_listen_address(text: str) -> ListenAddress:
    """``host:port``, ``:port`` (every interface, IPv6 and IPv4) or ``[::1]:port``; ValueError if malformed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {text!r}: expected host:port, :port or [ipv6]:port")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        return ListenAddress(host[1:-1], port, socket.AF_INET6)
    if not host:
        return ListenAddress("::" if socket.has_ipv6 else "0.0.0.0", port,
                             socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET)
    if ":" in host:
        raise ValueError(f"invalid listen address {text!r}: put an IPv6 address in brackets, like [::1]:10123")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"invalid listen address {text!r}: cannot resolve {host!r}: {err.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return ListenAddress(str(sockaddr[0]), port, family)


class ListenError(Exception):
    """An address that cannot be listened on: ``address`` as given, ``reason`` the system's words."""

    def __init__(self, address: ListenAddress, err: OSError) -> None:
        self.address = address
        self.reason = err.strerror or str(err)
        super().__init__(f"cannot listen on {address}: {self.reason}")


def listen(address: ListenAddress) -> socket.socket:
    """A listening socket on ``address``; ``:port`` (host ``::``) takes IPv4 too, or only IPv4 on a host
    without IPv6 (some containers). ListenError if it cannot be bound."""
    try:
        return _listen(address)
    except OSError as err:
        if address.host != "::":
            raise ListenError(address, err) from None
        try:
            return _listen(ListenAddress("0.0.0.0", address.port, socket.AF_INET))
        except OSError as again:
            raise ListenError(address, again) from None


def _listen(address: ListenAddress) -> socket.socket:
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family == socket.AF_INET6 and address.host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait for TIME_WAIT
        sock.bind((address.host, address.port))
        sock.listen(limits.LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class WebServers:
    """Serves ``app`` on every address, one connection loop (and its thread) each; ``shutdown`` stops them all."""

    def __init__(self, app: WebApp, addresses: list[ListenAddress]) -> None:
        listeners: list[socket.socket] = []
        try:
            for address in addresses:
                listeners.append(listen(address))
        except ListenError:
            for sock in listeners:
                sock.close()
            raise
        self.bound = [_address(sock) for sock in listeners]
        self._loops = [ConnectionLoop(sock, app) for sock in listeners]

    def start(self) -> None:
        for loop in self._loops:
            loop.start()

    def shutdown(self) -> None:
        for loop in self._loops:
            loop.close()


def _address(sock: socket.socket) -> str:
    name = sock.getsockname()
    return str(ListenAddress(str(name[0]), int(name[1]), socket.AddressFamily(sock.family)))
