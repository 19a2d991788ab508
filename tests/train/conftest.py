from __future__ import annotations

import pytest
from core_fakes import one_process_group


@pytest.fixture
def process_group(tmp_path):
    with one_process_group(tmp_path / "group-store"):
        yield


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow store for the session's training runs (creating a SQLite store takes seconds; each
    run is its own MLflow run in it)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
