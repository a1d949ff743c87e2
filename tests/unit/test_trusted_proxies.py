"""Which address a request came from behind trusted proxies (nuvla_job/api/proxies.py)."""

from __future__ import annotations

import pytest

from nuvla_job.api.proxies import TrustedProxies


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    proxies = TrustedProxies()
    assert not proxies
    assert proxies.client_address("192.0.2.1", "203.0.113.9") == "192.0.2.1"


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    proxies = TrustedProxies(["10.0.0.5", "172.16.0.0/12"])
    forwarded = "198.51.100.7, 203.0.113.9, 172.20.1.1"  # spoofed, client, inner proxy
    assert proxies.client_address("10.0.0.5", forwarded) == "203.0.113.9"
    assert proxies.client_address("10.0.0.5", None) == "10.0.0.5"
    assert proxies.client_address("10.0.0.5", "") == "10.0.0.5"
    # An untrusted peer's header is not believed.
    assert proxies.client_address("192.0.2.1", "203.0.113.9") == "192.0.2.1"
    # Every hop trusted: the leftmost.
    assert proxies.client_address("10.0.0.5", "172.16.0.1, 172.16.0.2") == "172.16.0.1"
    # Garbage where the client should be: the proxy's own address, not the garbage.
    assert proxies.client_address("10.0.0.5", "not-an-ip") == "10.0.0.5"
    assert proxies.client_address("10.0.0.5", "2001:db8::1") == "2001:db8::1"


def test_a_proxy_given_by_name_is_resolved() -> None:
    proxies = TrustedProxies(["localhost"])
    assert proxies.trusts("127.0.0.1")
    assert proxies.client_address("127.0.0.1", "203.0.113.9") == "203.0.113.9"


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "-bad-", "a b", "é.example", "x" * 64])
def test_bad_values_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an address, a network or a host name"):
        TrustedProxies([bad])
