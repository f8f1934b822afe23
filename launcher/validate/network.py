"""Rules on cluster.network_interface: a name Linux can have, and not together with server.host (both would
choose the server's address).
"""

from __future__ import annotations

import re

from launcher.config.schema import Backend, LaunchConfig
from launcher.validate.problems import Facts, Problem

INTERFACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")  # Linux: at most 15 characters, no '/', ':'


def check_network_interface(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    name = cfg.cluster.network_interface
    if name is None:
        return []
    if not isinstance(name, str) or not INTERFACE_NAME.match(name):
        return [Problem(("cluster.network_interface",),
                        f"{name!r} is not a network interface name (1-15 letters, digits, '.', '_', '-'; "
                        "e.g. ib0, hsn0, eth1)")]
    if cfg.server.host is not None:
        return [Problem(("cluster.network_interface", "server.host"),
                        f"both choose the server's address ({name} and {cfg.server.host}): set one of them")]
    if cfg.cluster.backend == Backend.local:
        return [Problem(("cluster.network_interface",),
                        "is ignored on the local backend (everything runs on this machine's loopback)",
                        severity="warning")]
    return []
