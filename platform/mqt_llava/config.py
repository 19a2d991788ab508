"""Typed run configs: pydantic models loaded from YAML, with `--set a.b=c` overrides.

Unknown keys are errors (a typo must not silently fall back to a default) and every validation
error names the field's dotted path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

# The presets ship inside the package (package data), so an installed platform finds them wherever
# it runs: a checkout, a wheel, or a Ray job's uploaded working directory.
PRESET_DIR = Path(__file__).resolve().parent / "configs"


class Spec(BaseModel):
    """The base of every typed spec: unknown keys are errors, and a loaded spec does not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    pass


def parse_override(item: str) -> tuple[list[str], Any]:
    """'a.b=c' -> (['a', 'b'], yaml-parsed c)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    try:
        return key.strip().split("."), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override {item!r}: the value is not YAML ({exc.problem}); quote it: 'key=\"...\"'"
        ) from None


def split_overrides(overrides: list[str], section: str) -> tuple[list[str], list[str]]:
    """(overrides under `section.`, with that prefix removed; the rest). A spec field that names
    another spec (a stage's `model: tiny`) is set by `section=value`; `section.a.b=value` reaches a
    field of the spec it names."""
    inside, rest = [], []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.startswith(f"{section}."):
            inside.append(item.strip().removeprefix(f"{section}."))
        else:
            rest.append(item)
    return inside, rest


def override_value(value: Any) -> str:
    """A value as `--set` parses it back (YAML, flow style): 4, true, null, [1, 2], M."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def as_overrides(values: dict[str, Any], prefix: str = "") -> list[str]:
    """A nested mapping as `a.b=c` overrides (values in YAML's flow style), e.g. a spec section that
    overrides another config."""
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out += as_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={override_value(value)}")
    return out


def prefixed(section: str, overrides: list[str]) -> list[str]:
    """The inverse of split_overrides: `a.b=c` -> `section.a.b=c`."""
    return [f"{section}.{item.strip()}" for item in overrides]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """A spec from a YAML file or a packaged config (`tiny/stage1`), with `a.b=c` overrides; with no
    path, from the spec's defaults and the overrides alone."""
    path = config_path(path) if path is not None else None
    data = (yaml.safe_load(path.read_text()) or {}) if path else {}
    data = apply_overrides(data, overrides or [])
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(problem(cls, err) for err in exc.errors())
        raise ConfigError(f"{path}: {problems}" if path else problems) from None


def problem(cls: type[BaseModel], err: dict[str, Any]) -> str:
    """One validation error as `a.b: what is wrong`; a missing field says what it is and how to set it."""
    where = ".".join(str(p) for p in err["loc"]) or "<root>"
    if err["type"] == "string_type" and isinstance(err.get("input"), bool):
        # YAML (1.1, as PyYAML reads it) takes yes/no/on/off/true/false for booleans, in a file and in --set
        return f"{where}: {err['msg']}; YAML read the value as {err['input']}: quote it (--set '{where}=\"Yes\"')"
    if err["type"] != "missing":
        return f"{where}: {err['msg']}"
    field, node = None, cls
    for part in err["loc"]:  # the field's own description, found along its path
        fields = getattr(node, "model_fields", {})
        field = fields.get(part) if isinstance(part, str) else None
        node = field.annotation if field else None
    described = f": {field.description}" if field and field.description else ""
    return f"{where}: required (in the config, or --set {where}=...){described}"


def presets() -> list[str]:
    return sorted(p.name for p in PRESET_DIR.iterdir() if p.is_dir())


def preset_path(preset: str, name: str = "model") -> Path:
    """A packaged config: `preset_path("tiny", "stage1")` is the tiny preset's stage1.yaml."""
    path = PRESET_DIR / preset / f"{name}.yaml"
    if not path.is_file():
        known = {p: sorted(f.stem for f in (PRESET_DIR / p).glob("*.yaml")) for p in presets()}
        raise ConfigError(f"no config {preset}/{name}; packaged presets and their configs: {known}")
    return path


def config_path(ref: str | Path) -> Path:
    """A config a job was given: a YAML file, or a packaged one named `<preset>/<name>` (`tiny/stage1`)."""
    path = Path(ref).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    preset, sep, name = str(ref).partition("/")
    if not sep or "/" in name:
        raise ConfigError(f"config {ref!r}: give a YAML file or a packaged config <preset>/<name>, e.g. tiny/stage1")
    return preset_path(preset, name)


def model_config_path(model: str) -> Path:
    """A stage's `model`: a preset name (its packaged model.yaml), or a path to a model YAML."""
    if model.endswith((".yaml", ".yml")) or "/" in model:
        return config_path(model)
    return preset_path(model, "model")
