"""Reading docker-compose.yml as `docker compose config` would, without Docker: variable
interpolation (the compose-spec rules) and the merge keys of YAML, then the compose-spec parser."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute ${VAR}, $VAR, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error},
    ${VAR:+alt}, ${VAR+alt} and $$ like Compose; a required variable that is unset raises."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else str(value)
        if op in (":?", "?"):
            if empty:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if empty else arg
        return value or ""

    return _VARIABLE.sub(substitute, text)


def load_compose(text: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The compose file as a dict, interpolated, with YAML anchors and merge keys resolved."""
    loaded = yaml.safe_load(interpolate(text, env))
    if not isinstance(loaded, dict):
        raise ValueError("a compose file is a mapping")
    # Extension fields (x-*) are not part of the model compose builds.
    return {key: value for key, value in loaded.items() if not str(key).startswith("x-")}
