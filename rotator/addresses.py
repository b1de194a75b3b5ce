"""Network addresses as the configuration writes them: ``HOST:PORT`` listeners and loopback hosts.

Pure and stdlib-only, so that :mod:`rotator.config` can check them without
loading the listener (:mod:`rotator.health`) and its HTTP and metrics libraries.
"""

from __future__ import annotations

import ipaddress


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9188"``, ``"[::1]:9188"``, ``"0.0.0.0:0"`` -> ``(host, port)``; ``ValueError`` if not."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"not HOST:PORT: {listen!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"not HOST:PORT: {listen!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:9188: {listen!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range: {listen!r}")
    return host, port


def health_url(listen: str) -> str:
    """The base URL a local client reaches ``listen`` at (a wildcard address becomes loopback)."""
    host, port = parse_listen(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
