"""Strict reading of hardware/energy TOML tables: unknown or missing keys name their path."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from codesign.errors import HardwareError

T = TypeVar("T")


def check_keys(
    data: Any, valid: set[str], where: str, required: set[str] | None = None
) -> Mapping[str, Any]:
    """Return ``data`` if it is a table whose keys are all in ``valid`` (and has ``required``)."""
    if not isinstance(data, Mapping):
        raise HardwareError(f"{where} must be a table, got {type(data).__name__}")
    unknown = sorted(set(data) - valid)
    if unknown:
        raise HardwareError(
            f"unknown key {where}.{unknown[0]}: valid keys are {', '.join(sorted(valid))}"
        )
    missing = sorted((required or set()) - set(data))
    if missing:
        raise HardwareError(
            f"missing key {where}.{missing[0]}: give all of {', '.join(sorted(required or ()))}"
        )
    return data


def built(build: Callable[[], T], where: str) -> T:
    """Call ``build``; prefix any validation error with the TOML path ``where``."""
    try:
        return build()
    except HardwareError as exc:
        raise HardwareError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise HardwareError(f"{where}: bad value ({exc})") from None
