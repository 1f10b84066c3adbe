"""Which address the server advertises, so that processes on other nodes reach it.

A server listening on every interface (`server_config.bind_address` "0.0.0.0") must still tell
its peers one address. `server_config.interface` names the interface (e.g. "ib0", as Dask's
`--interface`); otherwise the server takes the address of its interface that routes to the
launcher's host. The launcher passes its own addresses to every job in MELISSA_LAUNCHER_HOSTS
(comma-separated, most specific first; 127.0.0.1 when every job runs on its host), and the server asks the kernel which of its own
addresses a packet to each would leave from (connecting a UDP socket sends nothing). This holds
where host names do not resolve to routable addresses (a node's hostname mapped to 127.0.0.1),
and picks the fast network where a node has several.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from melissa.errors import ConfigError

LAUNCHER_HOSTS_ENV = "MELISSA_LAUNCHER_HOSTS"
WILDCARDS = ("0.0.0.0", "*")
_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def interface_address(name: str) -> str | None:
    """The IPv4 address of interface `name`, or None if it has none (or does not exist)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR,
                                 struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def interface_addresses() -> dict[str, str]:
    """Every interface with an IPv4 address: name -> address, in the kernel's order."""
    found = {}
    for _, name in socket.if_nameindex():
        address = interface_address(name)
        if address is not None:
            found[name] = address
    return found


def launcher_hosts(local: bool) -> list[str]:
    """This host's addresses for MELISSA_LAUNCHER_HOSTS. With `local` jobs (all on this host),
    127.0.0.1; else its name's address unless that is a loopback one, then the address of
    every interface but the loopback one."""
    if local:
        return ["127.0.0.1"]
    hosts = []
    try:
        named = socket.gethostbyname(socket.gethostname())
    except OSError:
        named = ""
    if named and not named.startswith("127."):
        hosts.append(named)
    for name, address in interface_addresses().items():
        if name != "lo" and address not in hosts:
            hosts.append(address)
    return hosts


def route_source(host: str) -> str | None:
    """The local address that packets to `host` leave from, or None if there is no route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((host, 9))  # UDP: no packet is sent
            address: str = sock.getsockname()[0]
        except OSError:
            return None
    return None if address == "0.0.0.0" else address


def listen_address(bind_address: str, interface: str | None) -> str:
    """The address to bind: `interface`'s when given, unless bind_address is a wildcard."""
    if interface is None or bind_address in WILDCARDS:
        return bind_address
    return _require_interface(interface)


def advertised_address(bind_address: str, interface: str | None,
                       env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The host part of the address that peers on other nodes connect to."""
    if interface is not None:
        return _require_interface(interface)
    if bind_address not in WILDCARDS:
        return bind_address
    for host in filter(None, (h.strip() for h in env.get(LAUNCHER_HOSTS_ENV, "").split(","))):
        source = route_source(host)
        # A loopback-range address of the launcher's that is local here too (another network
        # namespace's bridge, say 127.1.0.1 seen from a node at 127.1.1.11) routes to this host's
        # own lo, not to the launcher: only the launcher's 127.0.0.1 itself means "this host".
        if source is not None and not (source == "127.0.0.1" != host):
            return source
    # Started without a launcher (or one on this host only): this host's first other address.
    others = [a for name, a in interface_addresses().items() if name != "lo"]
    return others[0] if others else socket.getfqdn()


def _require_interface(name: str) -> str:
    address = interface_address(name)
    if address is None:
        have = ", ".join(f"{n} ({a})" for n, a in interface_addresses().items()) or "none"
        raise ConfigError(
            f"server_config.interface: no IPv4 address on interface {name!r} on host "
            f"{socket.gethostname()} (interfaces with one: {have})"
        )
    return address
