"""Which files the studio may open when someone types a path into the page.

On 127.0.0.1 (the default) only the person at this machine can reach the page, and they may open any video
they can read. Once the server is shared (``--host`` other than a loopback address), anybody on the network
could type ``/home/you/secret.mp4``: then only paths inside the folders the server was started with are
opened (the video's folder, the project folder, each ``--allow DIR``), after resolving symbolic links and
``..``, so a link inside an allowed folder cannot point outside it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from vidtrack.errors import InputError

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PathGuard:
    """Resolve a user-given path and refuse it when the server is shared and it lies outside ``roots``."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]], *, shared: bool) -> None:
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        self.shared = shared

    def allows(self, path: Path) -> bool:
        if not self.shared:
            return True
        return any(path == root or path.is_relative_to(root) for root in self.roots)

    def check(self, path: str | os.PathLike[str]) -> Path:
        """The resolved path, or :class:`InputError` when a shared server may not open it."""
        resolved = Path(path).expanduser().resolve()
        if not self.allows(resolved):
            where = ", ".join(str(r) for r in self.roots) or "none"
            raise InputError(f"{path} is outside the folders this shared server may open ({where}); restart it "
                             "with --allow DIR to add a folder")
        return resolved
