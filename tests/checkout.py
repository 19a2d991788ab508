"""Where this checkout is: tests run jobs/, pipelines/ and serve_apps/ from it as a user does. The
library itself never assumes a checkout (its presets are package data)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
