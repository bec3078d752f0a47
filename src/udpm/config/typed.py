"""Values parsed by the type of the field they go into: ``1e-5`` is a float, not text.

YAML 1.1 reads ``1e-5`` as a string (it wants ``1.0e-5``), which is how ``--lr 1e-5`` used to
end in a ``TypeError``. Every value that enters a config passes through :func:`coerce`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from udpm.errors import UDPMError


def coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` converted to the type ``hint``, or a one-line error naming ``name``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, name)
            except UDPMError as exc:
                errors.append(str(exc))
        raise UDPMError(errors[0] if errors else f"{name} cannot be {value!r}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise UDPMError(f"{name} must be one of {choices}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise UDPMError(f"{name} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise UDPMError(f"{name} must have {len(args)} entries, got {len(value)}")
        hints = args or [Any] * len(value)
        return tuple(coerce(v, h, f"{name}[{i}]") for i, (v, h) in enumerate(zip(value, hints)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise UDPMError(f"{name} must be a list, got {value!r}")
        return [coerce(v, args[0], name) if args else v for v in value]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise UDPMError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    return _scalar(value, hint, name)


def _scalar(value: Any, hint: Any, name: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UDPMError(f"{name} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise UDPMError(f"{name} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UDPMError(f"{name} must be an integer, got {value!r}") from None
        if not number.is_integer():
            raise UDPMError(f"{name} must be an integer, got {value!r}")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise UDPMError(f"{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UDPMError(f"{name} must be a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, str):
            return value
        raise UDPMError(f"{name} must be text, got {value!r}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise UDPMError(f"{name} must be a mapping, got {value!r}")
        return build_dataclass(hint, value, name)
    return value


def field_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build_dataclass(cls, values: dict, where: str):
    """``cls(**values)`` with every value coerced to its field's type; unknown keys refused."""
    hints = field_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UDPMError(f"unknown config field(s) in {where}: {', '.join(unknown)}")
    typed = {
        k: coerce(v, hints[k], f"{where}.{k}" if where != "config" else k)
        for k, v in values.items()
    }
    return cls(**typed)
