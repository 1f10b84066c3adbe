"""The address a server advertises (protocol/address.py), from this host's real interfaces."""

from __future__ import annotations

import pytest

from melissa.errors import ConfigError
from melissa.protocol.address import (
    LAUNCHER_HOSTS_ENV,
    advertised_address,
    interface_address,
    interface_addresses,
    launcher_hosts,
    listen_address,
    route_source,
)


def test_interfaces() -> None:
    assert interface_address("lo") == "127.0.0.1"
    assert interface_addresses()["lo"] == "127.0.0.1"
    assert interface_address("nosuch0") is None


def test_a_named_address_is_advertised_as_it_is() -> None:
    assert advertised_address("127.0.0.1", None, {}) == "127.0.0.1"
    assert listen_address("127.0.0.1", None) == "127.0.0.1"


def test_the_interface_wins() -> None:
    assert advertised_address("0.0.0.0", "lo", {}) == "127.0.0.1"
    assert listen_address("127.0.0.2", "lo") == "127.0.0.1"
    assert listen_address("0.0.0.0", "lo") == "0.0.0.0"  # listens everywhere, advertises lo's


def test_an_unknown_interface_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"server_config.interface: no IPv4 address on "
                                          r"interface 'ib0' on host .*lo \(127.0.0.1\)"):
        advertised_address("0.0.0.0", "ib0", {})


def test_a_wildcard_advertises_the_route_to_the_launcher() -> None:
    assert route_source("127.0.0.1") == "127.0.0.1"
    # The first launcher address that routes wins (a malformed one does not route).
    env = {LAUNCHER_HOSTS_ENV: "not an address,127.0.0.1"}
    assert advertised_address("0.0.0.0", None, env) == "127.0.0.1"
    assert advertised_address("*", None, env) == "127.0.0.1"


def test_a_launcher_address_local_here_too_is_no_route_to_the_launcher() -> None:
    # 127.9.9.9 is this host's own lo here (as another namespace's bridge address is on a
    # namespace node): skipped, as if the launcher had given no address at all.
    assert route_source("127.9.9.9") == "127.0.0.1"
    assert advertised_address("0.0.0.0", None, {LAUNCHER_HOSTS_ENV: "127.9.9.9"}) == \
        advertised_address("0.0.0.0", None, {})


def test_launcher_hosts() -> None:
    assert launcher_hosts(local=True) == ["127.0.0.1"]
    remote = launcher_hosts(local=False)
    assert "127.0.0.1" not in remote
    assert set(remote) >= {a for n, a in interface_addresses().items() if n != "lo"}
