"""The GPU path imports only what the device image and the bundle provide.

benchmarks/gpu_check.py carries a bundle of wheels to a device image that has torch and
transformers but no mlflow, Ray or serving stack. tests/e2e/test_gpu_check_bundle.py proves this by
installing the bundle into an empty environment (minutes); this test sees the same fault in seconds:
it imports every module of GPU_PATH_MODULES in a fresh interpreter where any package outside the
image and the bundle fails to import. (A module-level `import mlflow` reached from train/spec.py
through TrackingSpec failed the device's first import this way.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_check import BUNDLE, DEVICE_IMAGE, GPU_PATH_MODULES  # noqa: E402

# Run in a fresh interpreter where every top-level package whose distribution is neither in the
# image (with the dependencies pip installs beside it, as in the bundle's stand-in) nor in the bundle
# (installed there with --no-deps) is absent. The standard library and this project pass.
PROBE = r"""
import importlib, importlib.machinery, importlib.metadata as md, json, re, sys
image, bundle, modules = (json.loads(arg) for arg in sys.argv[1:4])
owners = md.packages_distributions()
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()

def with_dependencies(names):
    seen, todo = set(), [norm(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [norm(re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires if "extra ==" not in r]
    return seen

allowed = with_dependencies(image) | {norm(n) for n in bundle}

refused = set()

# The path finder, blind to packages the device lacks: an optional import (find_spec) sees them
# missing, as it would there, and a hard import fails with ModuleNotFoundError.
class Absent:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in sys.stdlib_module_names and top != "mqt_llava":
            dists = {norm(d) for d in owners.get(top, [])}
            if dists and not dists & allowed:
                refused.add(top)
                return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)

sys.meta_path[:] = [Absent(f) if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
for module in modules:
    importlib.import_module(module)
print(json.dumps(sorted(refused)))
"""


def names(requirements: list[str]) -> list[str]:
    return [item.partition("==")[0] for item in requirements]


def test_every_gpu_path_module_imports_without_packages_the_device_lacks():
    image = names(DEVICE_IMAGE)
    bundle = names([item for items in BUNDLE.values() for item in items]) + ["mqt-llava"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *(json.dumps(x) for x in (image, bundle, GPU_PATH_MODULES))],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    # A package tried and refused where the import was optional (try/except ImportError) is fine; one
    # that failed the import shows above as a non-zero exit with its traceback.
    json.loads(done.stdout.splitlines()[-1])
