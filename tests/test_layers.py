"""The library's rooms and their order, checked on every import in platform/mqt_llava (module-level
and function-level alike, read with `ast`, nothing imported): a room imports only its own modules
and the rooms below it, so there is no arrow upwards and no import loop between rooms.

A room is a top-level module or package of mqt_llava (`mqt_llava.data.shards` is in `data`). A new
room must be placed in ROOMS before its first import is accepted. Imports made by name at run time
(`importlib.import_module`) are not seen.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "mqt_llava"

# Lowest first. A room may import the rooms of its own line and earlier lines, never a later line's
# (rooms of one line may import each other; the loop test keeps that one-way).
ROOMS: list[tuple[str, ...]] = [
    ("config", "output"),  # the strict spec base, overrides, loading; what jobs print
    ("tracking", "ray_runtime", "devices", "command"),  # MLflow; Ray start-up; placement; the jobs' command line
    ("model",),  # the model, its specs, its export format (image settings included)
    ("__init__",),  # the package itself (it imports nothing)
    ("data",),  # LLaVA's files, the shard format, the training samples
    ("inference",),  # engines that answer questions
    ("train", "eval", "explain"),
    ("serve", "ablation"),
    ("toy",),  # the synthetic world: a fixture, like a dataset and pretrained parts
    ("recipes",),  # end-to-end recipes such as the quickstart
]

LEVEL = {room: level for level, rooms in enumerate(ROOMS) for room in rooms}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    """`mqt_llava.data.shards` -> `data`; the package itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[str, int]]:
    """(module, line) for every mqt_llava import in `path` (a file under the package `root`), at any
    depth: absolute, relative, and `from mqt_llava import x` (module `mqt_llava.x`); in line order."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base == "mqt_llava":
                found += [(f"mqt_llava.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((base, node.lineno))
    ours = [(name, line) for name, line in found if name == "mqt_llava" or name.startswith("mqt_llava.")]
    return sorted(ours, key=lambda item: item[1])


def room_arrows() -> dict[tuple[str, str], list[str]]:
    """(from room, to room) -> where ("file:line"), for every import that crosses rooms."""
    arrows: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room_of(module_name(path))
        for name, line in imported_modules(path):
            target = room_of(name)
            if target != source:
                arrows[source, target].append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    return arrows


def forbidden(source: str, target: str) -> bool:
    return LEVEL[target] > LEVEL[source]


def test_every_room_is_placed():
    assert (PACKAGE / "__init__.py").is_file(), f"{PACKAGE}: the package is not there"
    rooms = {room for arrow in room_arrows() for room in arrow}
    rooms |= {room_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    unplaced = sorted(rooms - set(LEVEL))
    assert not unplaced, f"rooms not placed in ROOMS (tests/test_layers.py): {unplaced}"


def test_no_room_imports_a_higher_one():
    arrows = room_arrows()
    wrong = {arrow: where for arrow, where in arrows.items() if set(arrow) <= set(LEVEL) and forbidden(*arrow)}
    assert not wrong, "imports against the layering:\n" + "\n".join(
        f"  {a} -> {b}: {', '.join(where)}" for (a, b), where in sorted(wrong.items())
    )


def test_the_rooms_import_each_other_in_no_loop():
    """Rooms of one line may import each other, but never both ways round, directly or through others."""
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in room_arrows():
        graph[source].add(target)
    state: dict[str, str] = {}

    def visit(room: str, trail: list[str]) -> list[str] | None:
        state[room] = "open"
        for nxt in sorted(graph[room]):
            if state.get(nxt) == "open":
                return [*trail, room, nxt]
            if nxt not in state and (loop := visit(nxt, [*trail, room])):
                return loop
        state[room] = "done"
        return None

    for room in sorted(graph):
        if room not in state:
            loop = visit(room, [])
            assert loop is None, "import loop between rooms: " + " -> ".join(loop[loop.index(loop[-1]) :])


def test_the_reader_finds_imports_at_every_depth(tmp_path):
    """The reader itself: function-level, relative and `from mqt_llava import x` imports all count."""
    package = tmp_path / "mqt_llava"
    (package / "data").mkdir(parents=True)
    (package / "data" / "reader.py").write_text(
        "import os\n"
        "from . import shards\n"
        "from ..model.spec import ModelSpec\n"
        "def late():\n"
        "    from mqt_llava import toy\n"
        "    import mqt_llava.train.loop as loop\n"
    )
    found = imported_modules(package / "data" / "reader.py", package)
    assert sorted((room_of(name), line) for name, line in found) == [
        ("data", 2),
        ("model", 3),
        ("toy", 5),
        ("train", 6),
    ]
