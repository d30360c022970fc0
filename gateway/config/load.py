"""Reading configuration and price files: YAML (or JSON) with exact decimals and `${ENV}` interpolation.

This is the one place that reads the environment for configuration. Errors name the file, the key path and the
reason, e.g. `config/gateway.yaml: deployments.3.price.input: must not be negative, got -1`.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from gateway.config.schema import Config, PathError
from gateway.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
DEFAULT_CONFIG_PATH = "config/gateway.yaml"


class _DecimalLoader(yaml.SafeLoader):
    """SafeLoader that reads YAML floats as exact `Decimal` from their text."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    text = str(loader.construct_scalar(node)).replace("_", "")  # type: ignore[arg-type]
    lowered = text.lower()
    if lowered in (".inf", "+.inf", "-.inf", ".nan"):
        return Decimal("NaN") if "nan" in lowered else Decimal(lowered.replace(".inf", "Infinity"))
    try:
        return Decimal(text)
    except InvalidOperation:
        raise yaml.constructor.ConstructorError(None, None, f"not a decimal number: {text!r}",
                                                node.start_mark) from None


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
# YAML 1.1 reads `16:30` as a base-60 integer; off-peak windows are clock times, so keep them as text.
_DecimalLoader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if not (tag == "tag:yaml.org,2002:int" and ":" in regexp.pattern)]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_DecimalLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def parse_yaml_text(text: str) -> Any:
    """YAML (a superset of JSON) with floats as Decimal."""
    return yaml.load(text, Loader=_DecimalLoader)  # noqa: S506 - a SafeLoader subclass


def interpolate_env(data: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace `${VAR}` (or `${VAR:-default}`) in every string; an unset variable without default is an error."""
    if isinstance(data, dict):
        return {k: interpolate_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate_env(v, env, f"{path}.{i}" if path else str(i)) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = env.get(name)
            # `${VAR:-default}` means "unset or empty", as in the shell and docker-compose.
            if value is not None and (value != "" or default is None):
                return value
            if default is not None:
                return default
            raise PathError(path, f"environment variable {name} is not set")

        value = _ENV_RE.sub(sub, data)
        # A value that was only a reference and came out empty means "not configured".
        return None if value == "" and _ENV_RE.fullmatch(data) else value
    return data


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith(("function-", "function_"))))


def validation_message(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, PathError):
            lines.append(f"{source}: {ctx_err.path}: {ctx_err.reason}")
            continue
        loc = _format_loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def load_config_data(data: Any, source: str, env: Mapping[str, str] | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping with gateway, providers, deployments")
    try:
        data = interpolate_env(data, os.environ if env is None else env)
    except PathError as e:
        raise ConfigError(f"{source}: {e.path}: {e.reason}") from None
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_message(source, e)) from None


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read: {e.strerror}") from None
    try:
        data = parse_yaml_text(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{source}: {where}not valid YAML: {getattr(e, 'problem', e)}") from None
    return load_config_data(data, source, env)


def resolve_config_path(explicit: str | None) -> str:
    """`--config FILE`, else `$GATEWAY_CONFIG`, else `config/gateway.yaml`."""
    return explicit or os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG_PATH
