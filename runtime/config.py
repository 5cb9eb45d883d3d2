"""Configuration: frozen dataclasses, loaded from a small TOML file, overridden by CLI flags.

Example (every key optional)::

    [input]
    resize = 256
    crop = 256

    [method]
    name = "foct"
    preset = "edge"
    [method.params]          # checked against the method's Params dataclass
    tau_ratio = 0.3

    [threshold]
    value = 12.5             # override the threshold learnt from the support images
    views = 8                # jittered views per support image for the threshold

The resolved config is written into the manifest of every bank.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EdgeFoctError


@dataclass(frozen=True)
class InputConfig:
    resize: int | None = None  # None: the crop
    crop: int | None = None  # None: the backbone's fixed input size (a ViT), else 256


@dataclass(frozen=True)
class MethodConfig:
    name: str = "patchcore"
    preset: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ThresholdConfig:
    value: float | None = None
    views: int = 8
    seed: int = 0


@dataclass(frozen=True)
class Config:
    input: InputConfig = InputConfig()
    method: MethodConfig = MethodConfig()
    threshold: ThresholdConfig = ThresholdConfig()

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """Override fields per section, e.g. ``cfg.replace(method={"name": "foct"})``; None values are ignored."""
        out = {}
        for name, values in sections.items():
            current = getattr(self, name)
            values = {k: v for k, v in values.items() if v is not None}
            out[name] = dataclasses.replace(current, **values)
        return dataclasses.replace(self, **out)


_SECTIONS = {"input": InputConfig, "method": MethodConfig, "threshold": ThresholdConfig}


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise EdgeFoctError(f"{source}: unknown section(s) {unknown}; known: {sorted(_SECTIONS)}")
    sections = {}
    for name, cls in _SECTIONS.items():
        table = dict(data.get(name, {}))
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(table) - known)
        if bad:
            raise EdgeFoctError(f"{source}: [{name}] has unknown key(s) {bad}; known: {sorted(known)}")
        sections[name] = cls(**table)
    return Config(**sections)


def load_config(path: str | Path | None) -> Config:
    """Config from a TOML file, or the defaults when ``path`` is None."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeFoctError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise EdgeFoctError(f"{path}: not valid TOML ({e})") from None
    return config_from_dict(data, str(path))
