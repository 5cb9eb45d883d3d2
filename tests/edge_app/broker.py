"""A real Mosquitto broker for the tests: 127.0.0.1, a free port, its own config and persistence folder.

Skips (with the reason) where the Debian package ``mosquitto`` is not installed; `.ci/run` installs it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                                              if os.access(p, os.X_OK)), None)


def need_mosquitto() -> str:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("the MQTT tests need a real broker: install the Debian package `mosquitto` (.ci/run does)")
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """``start()`` / ``stop()`` (SIGTERM: it saves its persistence file) / ``start()`` again on the same port."""

    def __init__(self, binary: str, folder: Path, extra: str = "", anonymous: bool = True) -> None:
        self.binary, self.folder, self.port = binary, Path(folder), free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.conf = self.folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous {str(anonymous).lower()}\npersistence true\n"
            f"persistence_location {self.folder}/\nmax_queued_messages 0\nmax_inflight_messages 100\n"
            f"log_dest file {self.folder}/mosquitto.log\nuser {getpass.getuser()}\n{extra}")
        self.proc: subprocess.Popen | None = None

    def url(self, prefix: str = "plant") -> str:
        return f"mqtt://127.0.0.1:{self.port}/{prefix}"

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
