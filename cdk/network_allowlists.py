"""Allow-lists of networks (CIDRs) in the deployment's context: a list of networks, never the whole internet."""

from __future__ import annotations

import ipaddress

from cdk.context import SettingsError, context_key

#: The widest range an allow-list may hold, per IP version (prefix length): /8 is 16.7 million IPv4 addresses, a
#: 256th of the address space. Wider ones, or several whose addresses add up to more than one such range (the two
#: /1 halves, 0.0.0.0/0 cut in pieces), are not a list of networks but the internet.
WIDEST_PREFIX = {4: 8, 6: 16}


def check_cidrs(
    field_name: str, cidrs: tuple[str, ...], *, opens: str, instead: str, versions: tuple[int, ...] = (4, 6)
) -> None:
    """Raise SettingsError, naming the context key and the value, unless `cidrs` is a list of networks that
    does not open `opens` to the whole internet (allowedCidrs and clusterEndpointCidrs share this check).

    Each must be a network (strict: no host bits set) of an IP version in `versions`, no wider than
    WIDEST_PREFIX, and together, overlaps counted once, they must not cover more addresses than one range of
    that width."""
    key = context_key(field_name)
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as e:
            raise SettingsError(f"context {key!r}: {cidr!r} is not a CIDR ({e})") from e
        if network.version not in versions:
            raise SettingsError(f"context {key!r}: {cidr!r} is not an IPv{' or IPv'.join(map(str, versions))} CIDR")
        if network.prefixlen < WIDEST_PREFIX[network.version]:
            raise SettingsError(f"context {key!r}: {cidr!r} opens {opens} to the whole internet; {instead}")
        if isinstance(network, ipaddress.IPv4Network):
            v4.append(network)
        else:
            v6.append(network)
    for same, covered, widest, bits in (
        (v4, sum(n.num_addresses for n in ipaddress.collapse_addresses(v4)), WIDEST_PREFIX[4], 32),
        (v6, sum(n.num_addresses for n in ipaddress.collapse_addresses(v6)), WIDEST_PREFIX[6], 128),
    ):
        if covered > 2 ** (bits - widest):  # overlaps counted once
            together = ",".join(str(n) for n in same)
            raise SettingsError(
                f"context {key!r}: {together!r} together open {opens} to the whole internet "
                f"(more addresses than one /{widest}); {instead}"
            )
