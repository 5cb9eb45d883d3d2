"""Where a station sends its events: the broker URL, the station id, credentials and TLS.

From ``serve --mqtt URL --station ID`` and/or the ``[mqtt]`` table of ``serve --config FILE``
(flags win)::

    [mqtt]
    url = "mqtts://broker.plant:8883/plant/line3"   # mqtt:// (1883) or mqtts:// (TLS, 8883)
    station = "press-7"                             # default: the host name
    username = "press-7"                            # or EDGE_FOCT_MQTT_USERNAME
    password_file = "/etc/edge-foct/mqtt.pass"      # or EDGE_FOCT_MQTT_PASSWORD (never in the URL)
    ca = "/etc/ssl/plant-ca.pem"                    # TLS: the broker's CA (default: the system's)
    cert = "/etc/edge-foct/press-7.crt"             # TLS client certificate and key (optional)
    key = "/etc/edge-foct/press-7.key"
    queue_max = 20000                               # frames kept on disk while the broker is away
    status_every = 5.0                              # seconds between retained status messages

Topics: ``PREFIX/<station>/events``, ``PREFIX/<station>/defects``, ``PREFIX/<station>/status``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from edge_foct.runtime.errors import EdgeFoctError

ENV_USERNAME, ENV_PASSWORD, ENV_PASSWORD_FILE = ("EDGE_FOCT_MQTT_USERNAME", "EDGE_FOCT_MQTT_PASSWORD",
                                                 "EDGE_FOCT_MQTT_PASSWORD_FILE")
STATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_PREFIX = "edge-foct"


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    prefix: str  # topic prefix without a trailing "/" ("" for none)
    tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}/{self.prefix}"

    def topic(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


def parse_url(url: str) -> BrokerUrl:
    """``mqtt://HOST[:PORT][/PREFIX]`` or ``mqtts://...``; one clear line for anything else."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise EdgeFoctError(f"MQTT URL {url!r}: {e}") from None
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise EdgeFoctError(f"MQTT URL {url!r}: expected mqtt://HOST[:PORT]/PREFIX or mqtts://... (TLS)")
    if u.password is not None:
        raise EdgeFoctError(f"MQTT URL: no password in the URL (it shows in `ps`); set {ENV_PASSWORD} or "
                            f"password_file in the [mqtt] config")
    if u.username is not None or u.query or u.fragment:
        raise EdgeFoctError(f"MQTT URL {url!r}: only scheme, host, port and topic prefix; the user name "
                            f"goes in {ENV_USERNAME} or the [mqtt] config")
    prefix = u.path.strip("/") if u.path.strip("/") else DEFAULT_PREFIX
    if any(c in prefix for c in "+#\0") or "//" in prefix or "#" in url:
        raise EdgeFoctError(f"MQTT URL {url!r}: the topic prefix {prefix!r} may not hold '+', '#' or empty levels")
    return BrokerUrl(u.hostname, port or (8883 if u.scheme == "mqtts" else 1883), prefix, u.scheme == "mqtts")


@dataclass(frozen=True)
class MqttConfig:
    url: str | None = None
    station: str | None = None
    username: str | None = None
    password_file: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    queue_max: int = 20000
    status_every: float = 5.0
    keepalive: int = 10  # seconds: a dead station's last will is sent after 1.5x this

    def replace(self, **values: Any) -> "MqttConfig":
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})


def load_serve_config(path: str | Path | None) -> MqttConfig:
    """The ``[mqtt]`` table of a serve config file (the only table it knows today)."""
    if path is None:
        return MqttConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeFoctError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EdgeFoctError(f"{path}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - {"mqtt"})
    if unknown:
        raise EdgeFoctError(f"{path}: unknown section(s) {unknown}; serve knows [mqtt]")
    table = data.get("mqtt", {})
    known = {f.name: f for f in dataclasses.fields(MqttConfig)}
    bad = sorted(set(table) - set(known))
    if bad:
        raise EdgeFoctError(f"{path}: [mqtt] has unknown key(s) {bad}; known: {sorted(known)}")
    types = {"queue_max": int, "status_every": (int, float), "keepalive": int}
    for k, v in table.items():
        want = types.get(k, str)
        if not isinstance(v, want) or isinstance(v, bool):
            raise EdgeFoctError(f"{path}: [mqtt] {k} = {v!r} must be {'a number' if k in types else 'a string'}")
    return MqttConfig(**table)


@dataclass(frozen=True)
class BrokerSettings:
    """Everything the publisher needs, resolved and checked."""

    url: BrokerUrl
    station: str
    username: str | None
    password: str | None
    ca: Path | None
    cert: Path | None
    key: Path | None
    queue_max: int
    status_every: float
    keepalive: int


def resolve(cfg: MqttConfig, env: dict[str, str] | None = None) -> BrokerSettings:
    """Check a config and fill in the environment's credentials; one line for anything wrong."""
    env = dict(os.environ) if env is None else env
    if not cfg.url:
        raise EdgeFoctError("MQTT: no broker URL (--mqtt mqtt://HOST:PORT/PREFIX or url in [mqtt])")
    url = parse_url(cfg.url)
    station = cfg.station or socket.gethostname().split(".")[0]
    if not STATION_RE.match(station):
        raise EdgeFoctError(f"--station {station!r}: letters, digits, '_', '.', '-' (at most 64), no '/', '+', '#'")
    if cfg.queue_max < 1:
        raise EdgeFoctError(f"[mqtt] queue_max must be >= 1, got {cfg.queue_max}")
    if not 0.2 <= cfg.status_every <= 3600:
        raise EdgeFoctError(f"[mqtt] status_every must be within 0.2 .. 3600 s, got {cfg.status_every}")
    if not 2 <= cfg.keepalive <= 3600:
        raise EdgeFoctError(f"[mqtt] keepalive must be within 2 .. 3600 s, got {cfg.keepalive}")
    username = env.get(ENV_USERNAME) or cfg.username
    password = env.get(ENV_PASSWORD)
    password_file = env.get(ENV_PASSWORD_FILE) or cfg.password_file
    if password is None and password_file:
        try:
            password = Path(password_file).read_text().strip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise EdgeFoctError(f"MQTT password file {password_file}: cannot read it ({e})") from None
    if password is not None and not username:
        raise EdgeFoctError(f"MQTT: a password without a user name; set {ENV_USERNAME} or username in [mqtt]")
    files = {}
    for name in ("ca", "cert", "key"):
        value = getattr(cfg, name)
        if value is not None:
            if not url.tls:
                raise EdgeFoctError(f"[mqtt] {name} is a TLS option: use an mqtts:// URL")
            if not Path(value).is_file():
                raise EdgeFoctError(f"[mqtt] {name} = {value}: file not found")
        files[name] = Path(value) if value is not None else None
    if (files["cert"] is None) != (files["key"] is None):
        raise EdgeFoctError("[mqtt] cert and key go together (a TLS client certificate and its key)")
    return BrokerSettings(url, station, username, password, files["ca"], files["cert"], files["key"],
                          cfg.queue_max, float(cfg.status_every), cfg.keepalive)


def apply_credentials(client: mqtt.Client, s: BrokerSettings) -> None:
    """User name / password and TLS on a paho client; a bad certificate file is one line."""
    if s.username:
        client.username_pw_set(s.username, s.password)
    if s.url.tls:
        try:
            client.tls_set(ca_certs=str(s.ca) if s.ca else None, certfile=str(s.cert) if s.cert else None,
                           keyfile=str(s.key) if s.key else None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError, ValueError) as e:
            raise EdgeFoctError(f"MQTT TLS set-up failed ({e}); check [mqtt] ca, cert and key") from None
