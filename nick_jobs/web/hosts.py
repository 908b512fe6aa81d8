"""What a ``Host`` header may hold to be written into a URL: ``host[:port]``."""

from __future__ import annotations

import functools
import ipaddress
import re

# RFC 1123: letters, digits and inner hyphens, 63 characters a label at most; and
# underscores, which RFC 1123 leaves out but container service names (``my_api:8080``)
# carry, and which can't change what a URL means.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")


@functools.lru_cache(maxsize=512)
def valid_host(value: str) -> bool:
    """Whether ``value`` is ``host[:port]``: an RFC 1123 host name, an IPv4 address or a
    bracketed IPv6 address, and a port from 1 to 65535."""
    if value.startswith("["):
        end = value.find("]")
        address, rest = value[1:end], value[end + 1 :]
        if end < 0 or "%" in address:  # a zone id is no part of a URL's host
            return False
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return False
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
        if len(name.rstrip(".")) > 253 or not _HOSTNAME.match(name):
            return False
        # A name whose last label is all digits can only be an IPv4 address (RFC 1123 2.1).
        if name.rstrip(".").rpartition(".")[2].isdigit():
            try:
                ipaddress.IPv4Address(name)
            except ValueError:
                return False
    if not rest:
        return True
    port = rest[1:]
    return rest[0] == ":" and bool(_PORT.match(port)) and 1 <= int(port) <= 65535
