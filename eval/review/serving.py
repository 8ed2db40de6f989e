"""How ``python -m eval review serve`` exposes the reader page: address, TLS, warnings.

Reader codes are typed into the page, so over plain HTTP they cross the network in clear text.
The server therefore listens on localhost unless told otherwise; for readers on other machines
use TLS, either Streamlit's own (``server.sslCertFile`` / ``server.sslKeyFile``) or a reverse
proxy (nginx, Caddy) that terminates TLS in front of a localhost-only server (docs/reader-studies.md).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ctdiff.errors import InputError

DEFAULT_ADDRESS = "127.0.0.1"
LOCAL_NAMES = {"localhost", "localhost.localdomain"}


def is_local(address: str) -> bool:
    """True for loopback addresses (127.0.0.0/8, ::1) and 'localhost'."""
    if address.strip().lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from outside


def tls_options(cert: str | None, key: str | None) -> list[str]:
    """Streamlit options that turn on HTTPS; both files or neither, and both must exist."""
    if not cert and not key:
        return []
    if not (cert and key):
        raise InputError("TLS needs both --ssl-cert and --ssl-key", cert or key)
    for path in (cert, key):
        if not Path(path).is_file():
            raise InputError("TLS file not found", path)
    return ["--server.sslCertFile", str(Path(cert).resolve()), "--server.sslKeyFile", str(Path(key).resolve())]


def exposure_warning(address: str, tls: bool) -> str | None:
    """A warning when reader codes would travel unencrypted beyond this machine."""
    if tls or is_local(address):
        return None
    return (
        f"warning: serving on {address} over plain HTTP: reader access codes cross the network in clear text. "
        "Use --ssl-cert/--ssl-key, or keep the default localhost address behind a TLS reverse proxy "
        "(docs/reader-studies.md)."
    )
