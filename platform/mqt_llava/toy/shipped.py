"""The tiny preset's base models as the package ships them: built once by jobs/base_models.py, kept
under mqt_llava/pretrained/<preset>/ (tokenizer/, clip/, llm/), and loaded by the preset with
`from_pretrained` through `package://mqt_llava/pretrained/<preset>/...` as llava-7b loads hub names.

Beside the parts, `manifest.json` says what made them: a fingerprint of the resolved config and of
the code that built them, the gates the job printed, every file's hash (and each tensor's shape),
and the commit and machine. `fingerprint()` recomputes the first from today's config and code, so a
test can tell when the shipped parts no longer match what their job would build.

The code's fingerprint is the source of every definition the build reaches from `make_base_models`
inside this package (functions, classes, constants, followed through imports and calls), each
without docstrings, comments or layout, and keyed by its text, not its module: moving a function
or rewording a docstring keeps the fingerprint, changing what any reached code does changes it.
Specs are left out (their values are in the resolved config), and so is what only prints
(mqt_llava.output).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open

from mqt_llava.config import ConfigError, Spec
from mqt_llava.model.spec import ModelSpec
from mqt_llava.model.storage import PACKAGED, packaged_path
from mqt_llava.toy.base_models import BASE_MODEL_DIRS, make_base_models
from mqt_llava.toy.spec import BaseModelsSpec

PACKAGE = "mqt_llava"
MANIFEST = "manifest.json"
BUILDING = "building.json"  # written when a build starts, for a resumed build to check it is the same one
NOT_THE_BUILD = ("mqt_llava.output",)  # modules whose code only prints


def shipped_location(preset: str = "tiny") -> str:
    """Where a preset's shipped base models live, as a preset's `pretrained` field names them."""
    return f"{PACKAGED}{PACKAGE}/pretrained/{preset}"


def ships_parts(out: Path) -> bool:
    """Whether `out` is the package's own place for a preset's parts, however it is spelt
    (`package://...` or a path into the checkout or the installed package)."""
    root = packaged_path(f"{PACKAGED}{PACKAGE}/pretrained").resolve()
    return out.expanduser().resolve().is_relative_to(root)


def resolve_out(out: str) -> Path:
    """The job's `out`: a directory, or a `package://` one (the shipped parts' own place)."""
    return packaged_path(out) if out.startswith(PACKAGED) else Path(out).expanduser()


# --- the fingerprint -------------------------------------------------------------------------------


def build_settings(spec: BaseModelsSpec, model: ModelSpec) -> dict:
    """What the build is given, minus where it reads and writes: the resolved job spec, and the
    parts of the model preset it trains (the architectures, the tower's feature layer, the images'
    aspect handling). The preset's `pretrained` paths and its connector do not enter."""
    return {
        "base_models": spec.model_dump(mode="json", exclude={"out", "corpus", "model"}),
        "model": {
            "vision_tower": model.vision_tower.architecture,
            "feature_layer": model.vision_tower.feature_layer,
            "llm": model.llm.architecture,
            "image": model.image.model_dump(mode="json"),
        },
    }


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _module_index(name: str, package: str) -> tuple[dict[str, ast.stmt], dict[str, tuple[str, str | None]]]:
    """A module's top-level definitions (name -> statement) and its imports from `package`
    (local name -> (module, name), name None for an imported module)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(name)))
    definitions: dict[str, ast.stmt] = {}
    imports: dict[str, tuple[str, str | None]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            definitions[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        definitions[leaf.id] = node
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            for alias in node.names:
                source = f"{node.module}.{alias.name}"
                is_module = importlib.util.find_spec(source) is not None if _is_package(node.module) else False
                imports[alias.asname or alias.name] = (source, None) if is_module else (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package and alias.asname:
                    imports[alias.asname] = (alias.name, None)
    return definitions, imports


def _is_package(module: str) -> bool:
    return hasattr(importlib.import_module(module), "__path__")


def _is_spec(module: str, name: str) -> bool:
    value = getattr(importlib.import_module(module), name, None)
    return isinstance(value, type) and issubclass(value, Spec)


def code_closure(module: str, name: str, package: str = PACKAGE) -> dict[str, str]:
    """{"module.name": source} of every definition in `package` reached from `module.name`."""
    found: dict[str, str] = {}
    indexes: dict[str, tuple] = {}
    pending = [(module, name)]
    while pending:
        module, name = pending.pop()
        if module not in indexes:
            indexes[module] = _module_index(module, package)
        definitions, imports = indexes[module]
        if name in imports:  # a name the module imports: follow it to where it is defined
            source, imported = imports[name]
            if imported is not None:
                pending.append((source, imported))
            continue
        key = f"{module}.{name}"
        if key in found or name not in definitions or module in NOT_THE_BUILD or _is_spec(module, name):
            continue
        node = _strip_docstrings(ast.parse(ast.unparse(definitions[name])))
        found[key] = ast.unparse(node)
        for leaf in ast.walk(node):
            if isinstance(leaf, ast.Name):
                pending.append((module, leaf.id))
            elif isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name):
                target = imports.get(leaf.value.id)
                if target is not None and target[1] is None:  # `world.CELLS` with `from mqt_llava.toy import world`
                    pending.append((target[0], leaf.attr))
    return found


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(spec: BaseModelsSpec, model: ModelSpec) -> dict:
    """The build's fingerprint: `value` hashes the settings and the code; `code` names each
    definition's own hash, to say which changed."""
    code = code_closure(make_base_models.__module__, make_base_models.__name__)
    settings = build_settings(spec, model)
    code_hash = digest("\n\n".join(sorted(code.values())))  # by text: a definition that moves keeps its place
    value = digest(json.dumps({"settings": settings, "code": code_hash}, sort_keys=True))
    return {
        "value": value,
        "settings": settings,
        "code": {key: digest(source)[:16] for key, source in sorted(code.items())},
    }


# --- the manifest ----------------------------------------------------------------------------------


def describe_files(out: Path) -> dict[str, dict]:
    """Every file of the parts: its sha256 and size, and for weights each tensor's dtype and shape."""
    files = {}
    for directory in BASE_MODEL_DIRS.values():
        for path in sorted((out / directory).rglob("*")):
            if not path.is_file():
                continue
            entry: dict = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}
            if path.suffix == ".safetensors":
                with safe_open(path, framework="pt") as weights:
                    entry["tensors"] = {
                        key: [weights.get_slice(key).get_dtype(), weights.get_slice(key).get_shape()]
                        for key in weights.keys()  # noqa: SIM118 (safe_open is not a mapping)
                    }
            files[path.relative_to(out).as_posix()] = entry
    return files


def checkout_commit(anywhere: Path) -> dict:
    """The git commit of the checkout holding `anywhere`, and whether it had uncommitted changes."""
    try:
        run = functools.partial(subprocess.run, cwd=anywhere, capture_output=True, text=True, check=True)
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = bool(run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def machine() -> dict:
    import tokenizers
    import torch
    import transformers

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def gates(report: dict) -> dict:
    """The job's gates, as it printed them: passed or not, and every figure."""
    return {name: report[name] for name in ("clip_probe", "lm_scene_reading") if name in report}


def ship_base_models(
    spec: BaseModelsSpec,
    model: ModelSpec,
    out: Path,
    log: Callable[[str], None] = print,
    rebuild: bool = False,
    replace_other: bool = True,
) -> dict:
    """Builds the parts into `out` and writes their manifest. A build with another fingerprint
    left there (finished or not) is removed first, or, with `replace_other` off and no `rebuild`,
    refused (ConfigError) with nothing touched; an unfinished build with this fingerprint resumes
    (each part already made is kept); a finished one with this fingerprint is kept unless `rebuild`."""
    made = fingerprint(spec, model)
    manifest_path, building_path = out / MANIFEST, out / BUILDING
    if manifest_path.exists() and not rebuild:
        manifest = json.loads(manifest_path.read_text())
        if manifest["fingerprint"]["value"] == made["value"]:
            log(f"[base] {out}: up to date (fingerprint {made['value'][:12]}); --rebuild builds again")
            return manifest
    started = json.loads(building_path.read_text()) if building_path.exists() else None
    if started is None or started["fingerprint"] != made["value"]:
        if not (replace_other or rebuild) and (manifest_path.exists() or started is not None):
            raise ConfigError(
                f"{out} holds parts made by another config or code than this build's (fingerprint "
                f"{made['value'][:12]}): --rebuild replaces them; --set out=DIR makes parts of your own"
            )
        for directory in [*BASE_MODEL_DIRS.values(), MANIFEST, BUILDING]:
            stale = out / directory
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        out.mkdir(parents=True, exist_ok=True)
        started = {
            "fingerprint": made["value"],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **checkout_commit(Path(__file__).parent),
            "machine": machine(),
        }
        building_path.write_text(json.dumps(started, indent=2))
    else:
        log(f"[base] {out}: resuming the build started {started['started']}")
    report = make_base_models(spec, model, out, log)
    manifest = {
        "fingerprint": made,
        "world": json.loads((Path(spec.corpus).expanduser() / "corpus.json").read_text()),  # what they were made from
        "gates": gates(report),
        "report": report,
        "built": started | {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "files": describe_files(out),
    }
    manifest["built"].pop("fingerprint")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    building_path.unlink()
    return manifest


def read_manifest(preset: str = "tiny") -> dict:
    path = packaged_path(shipped_location(preset)) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no shipped base models for preset {preset!r} ({path}): run jobs/base_models.py")
    return json.loads(path.read_text())
