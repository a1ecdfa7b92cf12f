"""Settings: ``[tool.snapd]`` in the project's pyproject.toml, overridden by ``SNAPD_*``
environment variables.

>>> Settings().max_chains
3
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(Exception):
    """``[tool.snapd]`` or a ``SNAPD_*`` variable holds a value of the wrong kind."""


@dataclass(frozen=True)
class Settings:
    """What can be configured; the docs' configuration table lists the same names."""

    #: ``snapd pytest`` starts a daemon when none runs.
    autostart: bool = True
    #: The watcher polls instead of using inotify.
    poll: bool = False
    #: Extra globs of environment variables that must not split chains.
    env_ignore: tuple[str, ...] = ()
    #: Extra globs of paths (relative to the rootdir) whose changes never invalidate.
    watch_ignore: tuple[str, ...] = ()
    #: ``"module:function"`` hooks run in every request child before pytest starts.
    after_fork: tuple[str, ...] = ()
    #: Chains kept at once; the least recently used is stopped.
    max_chains: int = 3
    #: Stop the daemon after this many idle seconds (0: never).
    idle_timeout: float = 0.0
    #: Seconds a run waits for a base snapshot before running plain pytest.
    build_timeout: float = 600.0
    #: Stop the least recently used chain when all snapshots together use more (0: no cap).
    max_memory_mb: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def load(rootdir: str, env: dict[str, str] | None = None) -> Settings:
    """The settings for the project at ``rootdir``, as the process environment ``env`` sees them."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = dict(_from_pyproject(os.path.join(rootdir, "pyproject.toml")))
    for spec in fields(Settings):
        raw = env.get(f"SNAPD_{spec.name.upper()}")
        if raw is not None and spec.name != "extra":
            values[spec.name] = _parse_env(spec.name, raw)
    known = {spec.name for spec in fields(Settings)} - {"extra"}
    unknown = {k: v for k, v in values.items() if k not in known}
    settings = {k: _coerce(k, v) for k, v in values.items() if k in known}
    return Settings(**settings, extra=unknown)


def _from_pyproject(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    table = data.get("tool", {}).get("snapd", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.snapd] must be a table")
    return {key.replace("-", "_"): value for key, value in table.items()}


def _parse_env(name: str, raw: str) -> Any:
    default = Settings.__dataclass_fields__[name].default
    if isinstance(default, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(default, bool):
        return raw.strip().lower() not in ("", "0", "false", "no", "off")
    return raw


def _coerce(name: str, value: Any) -> Any:
    default = Settings.__dataclass_fields__[name].default
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, tuple):
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError
            return tuple(value)
        converter: Any = type(default)
        return converter(value)
    except (TypeError, ValueError):
        kind = type(default).__name__ if not isinstance(default, tuple) else "list of strings"
        raise ConfigError(f"snapd setting {name!r} must be a {kind}, not {value!r}") from None
