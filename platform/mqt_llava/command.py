"""The command line the jobs share: one typed spec, given as `--config` (a YAML file, or a packaged
config such as `tiny/stage1`), and `--set a.b=c` on its fields. `--help` lists the spec's fields."""

from __future__ import annotations

import argparse
from dataclasses import is_dataclass

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mqt_llava.config import presets


def spec_parser(
    spec: type[BaseModel], doc: str, default: str | None, example: str, prog: str | None = None
) -> argparse.ArgumentParser:
    """A parser with `--config` (default: `default`, or none: the spec from its defaults and `--set`)
    and `--set`; a job adds its few own switches (`--verbose`) to it."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, epilog=fields_help(spec), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    packaged = f"a packaged config such as {default}" if default else "a packaged config <preset>/<name>"
    packaged += f" (presets: {', '.join(presets())})"
    parser.add_argument(
        "--config",
        default=default,
        help=f"the job's {spec.__name__}: a YAML file or {packaged}"
        + ("" if default else "; without one, the fields come from --set"),
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"set a field of the spec (a.b=c reaches a nested one), e.g. --set {example}",
    )
    return parser


def fields_help(spec: type[BaseModel]) -> str:
    """The spec's top-level fields, each with its default (or `required`) and what it is."""
    lines = [f"{spec.__name__}'s fields (--set name=value):"]
    for name, field in spec.model_fields.items():
        if field.is_required():
            default = "required"
        elif field.default is PydanticUndefined:
            default = "default: computed"
        elif isinstance(field.default, BaseModel) or is_dataclass(field.default):
            default = f"section, {type(field.default).__name__}"
        else:
            default = f"default {field.default!r}"
        about = f": {field.description}" if field.description else ""
        lines.append(f"  {name} ({default}){about}")
    return "\n".join(lines)
