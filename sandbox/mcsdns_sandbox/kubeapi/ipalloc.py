"""ClusterIP and NodePort allocation for emulated Services.

Mirrors the real allocators (pkg/registry/core/service/ipallocator and portallocator): the network and, for
IPv4, the broadcast address are never handed out; dynamic allocation prefers the upper part of the range and
leaves a lower band for statically requested IPs (KEP-3070); a requested IP outside the range or already
taken is refused. Not thread-safe on its own: storage calls it under its lock. Pure apart from its
``random.Random``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
from dataclasses import dataclass, field
from typing import Final

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_SCAN: Final = 1 << 20


class AllocationError(Exception):
    """The requested address cannot be used; ``str()`` is the real server's field-error detail."""


@dataclass
class IPAllocator:
    """One family's service range. ``size`` counts usable addresses (capped for huge IPv6 ranges)."""

    network: IPNetwork
    rng: random.Random = field(default_factory=random.Random)
    _used: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        first = int(self.network.network_address) + 1
        last = int(self.network.broadcast_address) - (1 if self.network.version == 4 else 0)
        last = min(last, first + _MAX_SCAN - 1)
        self._first, self._last = first, last
        size = max(0, last - first + 1)
        # KEP-3070: min(max(16, size/16), 256) addresses at the bottom are reserved for static requests.
        self._static_band = min(max(16, size // 16), 256) if size > 32 else 0

    @property
    def family(self) -> str:
        return "IPv4" if self.network.version == 4 else "IPv6"

    def range_text(self) -> str:
        return str(self.network)

    def reserve(self, text: str) -> str:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise AllocationError("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)") from None
        value = int(address)
        if address.version != self.network.version or not self._first <= value <= self._last:
            raise AllocationError(
                f"provided IP is not in the valid range. The range of valid IPs is {self.range_text()}"
            )
        if value in self._used:
            raise AllocationError("provided IP is already allocated")
        self._used.add(value)
        return str(address)

    def allocate(self) -> str:
        dynamic_first = self._first + self._static_band
        for low, high in ((dynamic_first, self._last), (self._first, dynamic_first - 1)):
            span = high - low + 1
            if span <= 0:
                continue
            offset = self.rng.randrange(span)
            for step in range(span):
                candidate = low + (offset + step) % span
                if candidate not in self._used:
                    self._used.add(candidate)
                    return str(ipaddress.ip_address(candidate))
        raise AllocationError(f"range is full: {self.range_text()}")

    def release(self, text: str) -> None:
        with contextlib.suppress(ValueError):
            self._used.discard(int(ipaddress.ip_address(text)))

    def contains(self, text: str) -> bool:
        try:
            return int(ipaddress.ip_address(text)) in self._used
        except ValueError:
            return False


@dataclass
class PortAllocator:
    """The NodePort range (default 30000-32767)."""

    first: int = 30000
    last: int = 32767
    rng: random.Random = field(default_factory=random.Random)
    _used: set[int] = field(default_factory=set)

    def reserve(self, port: int) -> int:
        if not self.first <= port <= self.last:
            raise AllocationError(
                f"provided port is not in the valid range. The range of valid ports is "
                f"{self.first}-{self.last}"
            )
        if port in self._used:
            raise AllocationError("provided port is already allocated")
        self._used.add(port)
        return port

    def allocate(self) -> int:
        span = self.last - self.first + 1
        offset = self.rng.randrange(span)
        for step in range(span):
            port = self.first + (offset + step) % span
            if port not in self._used:
                self._used.add(port)
                return port
        raise AllocationError("range is full")

    def release(self, port: int) -> None:
        self._used.discard(port)


def parse_cidrs(text: str) -> list[IPNetwork]:
    """``"10.96.0.0/16"`` or a dual-stack pair ``"10.96.0.0/16,fd00:10:96::/108"`` (primary family first)."""
    networks = [ipaddress.ip_network(part.strip(), strict=True) for part in text.split(",") if part.strip()]
    if not 1 <= len(networks) <= 2 or (len(networks) == 2 and networks[0].version == networks[1].version):
        raise ValueError(f"service CIDR must be one range or one range per IP family: {text!r}")
    return networks
