"""Hosts of a test's own: network namespaces on a private subnet, joined by a bridge in a
namespace of its own (nothing is added to the machine's network). Needs root and `ip`."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

SUBNET = "10.77.{n}.{host}"


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *args] if namespace is None else ["ip", "-n", namespace, *args]
    subprocess.run(command, check=True, capture_output=True)


class Hosts:
    """`Hosts(["redis", "app", "a", "b"])`: each name a namespace with one address."""

    def __init__(self, names: list[str]) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            pytest.skip("NO NETNS: this test builds hosts with `ip netns`; it needs root and ip")
        self.tag = uuid.uuid4().hex[:6]
        self.switch = f"bb{self.tag}sw"
        self.names = names
        self.namespace = {name: f"bb{self.tag}{name}" for name in names}
        subnet = int(self.tag[:2], 16) % 200 + 20  # a /24 of 10.77.x.0 per test run
        self.address = {
            name: SUBNET.format(n=subnet, host=index + 1) for index, name in enumerate(names)
        }
        self._made: list[str] = []

    def __enter__(self) -> Hosts:
        try:
            _ip("netns", "add", self.switch)
            self._made.append(self.switch)
            _ip("link", "add", "br0", "type", "bridge", namespace=self.switch)
            _ip("link", "set", "br0", "up", namespace=self.switch)
            for index, name in enumerate(self.names):
                ns = self.namespace[name]
                _ip("netns", "add", ns)
                self._made.append(ns)
                _ip("link", "set", "lo", "up", namespace=ns)
                port = f"p{index}"
                _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
                    "netns", self.switch)  # fmt: skip
                _ip("link", "set", port, "master", "br0", namespace=self.switch)
                _ip("link", "set", port, "up", namespace=self.switch)
                _ip("addr", "add", f"{self.address[name]}/24", "dev", "eth0", namespace=ns)
                _ip("link", "set", "eth0", "up", namespace=ns)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for ns in reversed(self._made):
            _kill_everything_in(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def run_in(self, name: str, command: list[str]) -> list[str]:
        """The command, to run on that host (its processes see only its network)."""
        return ["ip", "netns", "exec", self.namespace[name], *command]

    def cut(self, name: str) -> None:
        """Unplug the host's cable (at the switch: the host does not notice)."""
        _ip("link", "set", f"p{self.names.index(name)}", "down", namespace=self.switch)

    def mend(self, name: str) -> None:
        _ip("link", "set", f"p{self.names.index(name)}", "up", namespace=self.switch)

    def kill_all(self, name: str) -> None:
        """kill -9 every process of the host, as if it lost power."""
        _kill_everything_in(self.namespace[name])


def _kill_everything_in(namespace: str) -> None:
    pids = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True
    ).stdout.split()
    for pid in pids:
        subprocess.run(["kill", "-9", pid], capture_output=True)
