"""Hosts of their own on one machine: a network namespace per party, joined by veth pairs.

The SuperLink gets a namespace ("server"), and each node one of its own, linked to the server's
by a veth pair with a /30 of 10.231.77.0/24: node k is 10.231.77.(4k+2), and reaches the
SuperLink at 10.231.77.(4k+1), its end of the link. Nothing is added to the machine's own
network: every address lives inside a namespace made here, and `close` deletes them all (their
veth pairs go with them). Needs root (CAP_NET_ADMIN); `Topology.make` says why it cannot.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

SUBNET = "10.231.77"  # private (RFC 1918), used only inside the namespaces made here
TIMEOUT_S = 10.0


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=TIMEOUT_S)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {(done.stderr or done.stdout).strip()}")


@dataclass
class Topology:
    nodes: int
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    made: list[str] = field(default_factory=list)  # namespaces to delete

    @property
    def server(self) -> str:
        return f"fedrec{self.tag}s"

    def node(self, k: int) -> str:
        return f"fedrec{self.tag}n{k}"

    def superlink_address(self, k: int) -> str:
        """The SuperLink's address as node k sees it: the server's end of their link."""
        return f"{SUBNET}.{4 * k + 1}"

    def node_address(self, k: int) -> str:
        return f"{SUBNET}.{4 * k + 2}"

    def server_addresses(self) -> list[str]:
        return [self.superlink_address(k) for k in range(self.nodes)]

    def make(self) -> str:
        """Create the namespaces and links; '' on success, else why not (everything made is
        removed again)."""
        if self.nodes > 60:
            return "at most 60 nodes fit the /24"
        try:
            for ns in (self.server, *(self.node(k) for k in range(self.nodes))):
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            for k in range(self.nodes):
                host, peer = f"fr{self.tag}s{k}", f"fr{self.tag}n{k}"  # at most 15 characters
                _ip("link", "add", host, "netns", self.server, "type", "veth", "peer", "name", peer,
                    "netns", self.node(k))  # fmt: skip
                _ip("-n", self.server, "addr", "add", f"{self.superlink_address(k)}/30", "dev", host)
                _ip("-n", self.node(k), "addr", "add", f"{self.node_address(k)}/30", "dev", peer)
                _ip("-n", self.server, "link", "set", host, "up")
                _ip("-n", self.node(k), "link", "set", peer, "up")
        except (OSError, subprocess.SubprocessError) as err:
            self.close()
            return str(err).splitlines()[0] if str(err) else type(err).__name__
        return ""

    def close(self) -> None:
        for ns in reversed(self.made):
            try:
                _ip("netns", "del", ns)
            except (OSError, subprocess.SubprocessError):
                pass  # already gone
        self.made.clear()


def in_namespace(ns: str | None, cmd: list[str]) -> list[str]:
    """`cmd`, run inside namespace `ns` (as is when None)."""
    return ["ip", "netns", "exec", ns, *cmd] if ns else cmd
