"""``--set KEY=VALUE`` overrides, typed by the field they set.

A key names a field of the config (``steps``), of the method's settings (``r1`` or
``settings.r1``), of its optimiser (``lr``, ``optim.lr`` or ``settings.optim.lr``), or an
entry of a network dict (``network.dropout``). Values are YAML, then converted to the
field's type, so ``lr=1e-5`` is a float. Changing ``method`` starts from that method's
default settings; the preset's shared fields (data, network, batch) stay.
"""

from __future__ import annotations

import dataclasses

import yaml

from udpm.config.schema import Config
from udpm.config.settings import SETTINGS
from udpm.errors import UDPMError

# Names of the 0.1.0 flat config, still accepted on the command line.
ALIASES = {"adam_betas": "optim.betas"}


def parse_assignment(item: str) -> tuple[str, object]:
    if "=" not in item:
        raise UDPMError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise UDPMError(f"cannot parse the value of override {item!r}") from exc
    return key.strip(), value


def apply_overrides(config: Config, assignments: list[str]) -> Config:
    """Apply ``key=value`` strings in order; see the module docstring for the keys."""
    values = config.to_dict()
    pairs = [parse_assignment(item) for item in assignments]
    for key, value in pairs:  # a new method first: later keys may set its settings
        if key == "method" and value != values["method"]:
            if value not in SETTINGS:
                raise UDPMError(f"unknown method {value!r}; known: {', '.join(SETTINGS)}")
            values["method"] = value
            values["settings"] = dataclasses.asdict(SETTINGS[value]())
    for key, value in pairs:
        if key != "method":
            _assign(values, ALIASES.get(key, key), value, key)
    return Config.from_dict(values)


def _assign(values: dict, key: str, value, given: str) -> None:
    path = key.split(".")
    if path[0] in ("network", "discriminator") and len(path) > 1:
        values[path[0]][".".join(path[1:])] = value
        return
    scopes = [values, values["settings"], values["settings"]["optim"]]
    if path[0] == "settings":
        path, scopes = path[1:], scopes[1:]
    if len(path) == 2 and path[0] == "optim":
        path, scopes = path[1:], scopes[2:]
    for scope in scopes:
        if len(path) == 1 and path[0] in scope and path[0] != "settings":
            scope[path[0]] = value
            return
    raise UDPMError(f"unknown config field {path[-1]!r} in override {given!r}")


def config_keys(config: Config) -> dict[str, object]:
    """Every settable key with its value (``udpm train --list-keys``)."""
    flat = {}
    for name, value in config.to_dict().items():
        if name == "settings":
            for k, v in value.items():
                if k == "optim":
                    flat.update({f"optim.{ok}": ov for ok, ov in v.items()})
                else:
                    flat[k] = v
        elif isinstance(value, dict):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    return flat


def flat_config(**values) -> Config:
    """A config from flat keyword values, as ``--set`` reads them (tests, scripts).

    ``flat_config(method="ddpm", lr=1e-3, T=20, resolution=16)`` resolves every key like
    :func:`apply_overrides` does, over the defaults of ``Config``.
    """
    method = values.pop("method", "udpm")
    if method not in SETTINGS:
        raise UDPMError(f"unknown method {method!r}; known: {', '.join(SETTINGS)}")
    base = Config(method=method, settings=SETTINGS[method]())
    nested = {k: values.pop(k) for k in ("network", "discriminator") if k in values}
    legacy = values.pop("diffusion", None)
    config = base.replace(**nested) if nested else base
    items = [f"{k}={_yaml(v)}" for k, v in values.items()]
    if legacy:
        from udpm.config.migrate import _gaussian

        items += [f"{k}={_yaml(v)}" for k, v in _gaussian(legacy, method).items()]
    return apply_overrides(config, items)


def _yaml(value) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")
