"""Configuration: frozen dataclasses, loaded from a small TOML file, overridden by CLI flags.

Example (every key optional)::

    [input]
    resize = 256
    crop = 256
    aspect = 1.0             # width / height of the network input; 1 = square

    [method]
    name = "foct"
    preset = "edge"
    [method.params]          # checked against the method's Params dataclass
    tau_ratio = 0.3

    [threshold]
    value = 12.5             # override the threshold learnt from the support images
    views = 8                # jittered views per support image for the threshold

    [support]
    augment = "rot180"       # turned / mirrored copies of the support in the memory (runtime/support_augment.py)

The resolved config is written into the manifest of every bank.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EdgeFoctError
from .support_augment import support_augment


#: network input sizes accepted (resize and crop, pixels): multiples of 16 (the stride-8 and stride-16
#: grids line up), at least a 4 x 4 patch grid, at most 1024 (memory and latency grow with its square)
MIN_SIZE, MAX_SIZE = 32, 1024


def check_input_size(resize: object, crop: object, source: str = "input") -> None:
    """One line (EdgeFoctError) unless ``resize`` and ``crop`` are ints with crop % 16 == 0,
    MIN_SIZE <= crop <= resize <= MAX_SIZE."""
    for name, v in (("crop", crop), ("resize", resize)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise EdgeFoctError(f"{source}: {name} = {v!r} is not an integer")
    if crop % 16 or not MIN_SIZE <= crop <= resize <= MAX_SIZE:  # type: ignore[operator]
        raise EdgeFoctError(f"{source}: resize = {resize}, crop = {crop}: need crop a multiple of 16 and "
                            f"{MIN_SIZE} <= crop <= resize <= {MAX_SIZE}")


def is_number(v: object) -> bool:
    """A finite int or float (bool is not a number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class InputConfig:
    resize: int | None = None  # None: the crop
    crop: int | None = None  # None: the backbone's fixed input size (a ViT), else 256
    aspect: float = 1.0  # width / height of the network input (fit --keep-aspect sets it from the support)


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
class SupportConfig:
    augment: str = "none"  # runtime/support_augment.py: none, or rot90 / rot180 / flip joined by +


@dataclass(frozen=True)
class Config:
    input: InputConfig = InputConfig()
    method: MethodConfig = MethodConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    support: SupportConfig = SupportConfig()

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


_SECTIONS = {"input": InputConfig, "method": MethodConfig, "threshold": ThresholdConfig, "support": SupportConfig}


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
    config = Config(**sections)
    check_config(config, source)
    return config


def check_config(config: Config, source: str = "config") -> None:
    """Types and ranges of every value, as one line (EdgeFoctError); method params are checked by
    ``make_params`` when the method is made."""
    crop = config.input.crop if config.input.crop is not None else 256  # None: the backbone's size
    resize = config.input.resize if config.input.resize is not None else crop  # None: the crop
    check_input_size(resize, crop, f"{source} [input]")
    if not is_number(config.input.aspect) or not 0.25 <= config.input.aspect <= 4.0:
        raise EdgeFoctError(f"{source}: [input] aspect = {config.input.aspect!r}: give a number in [0.25, 4] "
                            f"(width / height; 1 = square)")
    m, t = config.method, config.threshold
    if not isinstance(m.name, str) or not (m.preset is None or isinstance(m.preset, str)):
        raise EdgeFoctError(f"{source}: [method] name = {m.name!r}, preset = {m.preset!r}: give strings")
    if not isinstance(m.params, dict):
        raise EdgeFoctError(f"{source}: [method.params] must be a table, got {m.params!r}")
    if t.value is not None and not is_number(t.value):
        raise EdgeFoctError(f"{source}: [threshold] value = {t.value!r}: give a finite number")
    for name, v, low in (("views", t.views, 1), ("seed", t.seed, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise EdgeFoctError(f"{source}: [threshold] {name} = {v!r}: give an integer >= {low}")
    try:
        support_augment(config.support.augment, config.input.aspect)
    except EdgeFoctError as e:
        raise EdgeFoctError(f"{source}: [support] {e}") from None


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
