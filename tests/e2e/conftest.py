import sys
from pathlib import Path

import pytest
import ray
from ray.data import DataContext

# this directory, tests/data (odd_corpus) and tests/ (small_model, checkout)
TEST_DIRS = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "data"), str(Path(__file__).parents[1])]
sys.path[:0] = TEST_DIRS[1:]


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole session (starting one costs seconds and ~1 GB)."""
    from mqt_llava.ray_runtime import init_ray

    # Functions defined in test modules are pickled by reference: workers must import them too.
    init_ray(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": ":".join(TEST_DIRS)}})
    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
