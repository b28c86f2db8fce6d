"""Memory devices behind one interface, keyed by a target's `[device] model = "..."`.

Every module of this package that defines a `DeviceModel` subclass with `@register` is a device: adding
a technology is adding one module here (and a target TOML that picks it). Nothing else names a device.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from runtime.physics.devices.base import DeviceError, DeviceModel, Key, Programmed

_REGISTRY: dict[str, type[DeviceModel]] = {}
_DISCOVERED = False


def register(cls: type[DeviceModel]) -> type[DeviceModel]:
    """Class decorator: make a device available under its `name`."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    other = _REGISTRY.get(cls.name)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"device name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")
    _DISCOVERED = True


def device_names() -> list[str]:
    """Registered device models, sorted."""
    _discover()
    return sorted(_REGISTRY)


def noisy_device_names() -> list[str]:
    """Devices whose default configuration has some noise (those that training can imitate)."""
    return [n for n in device_names() if not _REGISTRY[n]().noiseless]


def device_class(name: str) -> type[DeviceModel]:
    """The device registered as `name`; DeviceError lists the known ones."""
    _discover()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise DeviceError(f"[device].model must be one of {', '.join(repr(n) for n in sorted(_REGISTRY))}"
                          f", got {name!r}") from None


def make_device(name: str, **params: Any) -> DeviceModel:
    """A device model with its keys checked and defaults filled in."""
    return device_class(name)(**params)


def from_section(section: dict[str, Any]) -> DeviceModel:
    """The device of a resolved target's `[device]` table."""
    params = dict(section)
    return make_device(str(params.pop("model", "pcm")), **params)


__all__ = ["DeviceError", "DeviceModel", "Key", "Programmed", "device_class", "device_names", "from_section",
           "make_device", "noisy_device_names", "register"]
