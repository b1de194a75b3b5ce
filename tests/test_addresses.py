"""Listen addresses and loopback hosts, as the configuration and ``rotator healthcheck`` read them."""

from __future__ import annotations

import pytest

from rotator.addresses import health_url, is_loopback, parse_listen


@pytest.mark.parametrize(
    ("listen", "expected", "url"),
    [
        ("127.0.0.1:9188", ("127.0.0.1", 9188), "http://127.0.0.1:9188"),
        ("0.0.0.0:9188", ("0.0.0.0", 9188), "http://127.0.0.1:9188"),
        ("[::1]:9188", ("::1", 9188), "http://[::1]:9188"),
        ("[::]:0", ("::", 0), "http://[::1]:0"),
        ("localhost:80", ("localhost", 80), "http://localhost:80"),
    ],
)
def test_listen_addresses(listen: str, expected: tuple[str, int], url: str) -> None:
    """HOST:PORT, IPv6 in brackets; wildcards are reached on loopback."""
    assert parse_listen(listen) == expected
    assert health_url(listen) == url


@pytest.mark.parametrize("listen", ["9188", ":9188", "::1:9188", "host:http", "host:70000", "[::1:9188"])
def test_bad_listen_addresses(listen: str) -> None:
    """Anything else is refused."""
    with pytest.raises(ValueError, match=r"HOST:PORT|brackets|range"):
        parse_listen(listen)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("api.localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("admin.vps.org", False),
        ("localhost.example", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    """This machine's names and addresses, and nothing that only looks like one."""
    assert is_loopback(host) is loopback
