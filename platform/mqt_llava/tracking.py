"""MLflow for training runs: one MLflow run per platform run name, so a resumed or resubmitted run
keeps logging into the run it started.

The tracking URI comes from the config, else MLFLOW_TRACKING_URI, else a SQLite store beside the
runs (`<storage>/mlflow.db`, artifacts under `<storage>/mlartifacts`). MLflow 3 refuses its old
file store, and SQLite's default artifact location is the *current directory*, so the experiment is
created with an explicit artifact location.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from mqt_llava.config import Spec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# mlflow is imported where a run is logged, not here: the specs import TrackingSpec, and the GPU
# bundle (benchmarks/gpu_check.py) runs the training path on a device image that has no mlflow.


class TrackingSpec(Spec):
    """Where rank 0 logs the run (MLflow). `uri` None: MLFLOW_TRACKING_URI, else a SQLite store
    (`mlflow.db`, artifacts in `mlartifacts/`) in the runs' storage directory."""

    uri: str | None = None
    experiment: str = "mqt-llava"
    log_export: bool = Field(True, description="log the final export as artifacts (large for 7B)")
    run_id: str | None = Field(None, description="log into this existing MLflow run (an ablation trial's)")
    parent_run_id: str | None = Field(None, description="a run created here is nested under this one")


RUN_NAME_TAG = "mqt_llava.run_name"
STORAGE_TAG = "mqt_llava.storage"
PARENT_TAG = "mlflow.parentRunId"
log = logging.getLogger(__name__)


def tracking_uri(spec: TrackingSpec, storage: str) -> str:
    if spec.uri:
        return spec.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(storage).resolve() / 'mlflow.db'}"


def default_artifact_location(uri: str) -> str | None:
    """Artifacts beside a local SQLite store; a tracking server decides for itself."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts")
    return None


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    import mlflow

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=default_artifact_location(uri))
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create (parallel trials).
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> MLflow params with dotted keys (`schedule.kind`)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]  # MLflow's limit on a param value
    return out


class RunTracker:
    """The MLflow run of one platform run (storage, name): found by tags, or created."""

    def __init__(self, spec: TrackingSpec, storage: str, run_name: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(spec, storage)
        self.client = MlflowClient(self.uri)
        self.experiment_id = ensure_experiment(self.client, spec.experiment, self.uri)
        self.parent_run_id = spec.parent_run_id
        if spec.run_id:
            self.client.update_run(spec.run_id, status="RUNNING")
            self.run_id = spec.run_id
        else:
            self.run_id = self.find_or_create(str(storage), run_name)

    def find_or_create(self, storage: str, run_name: str) -> str:
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}' and tags.`{STORAGE_TAG}` = '{storage}'",
            max_results=1,
        )
        if found:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        tags = {RUN_NAME_TAG: run_name, STORAGE_TAG: storage}
        if self.parent_run_id:
            tags[PARENT_TAG] = self.parent_run_id  # MLflow's nested runs: the UI shows it under its parent
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        return run.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        existing = self.client.get_run(self.run_id).data.params
        # A resumed run logs the same params again; MLflow refuses changed values, so only new keys go.
        fresh = {k: v for k, v in flatten(params).items() if k not in existing}
        if fresh:
            self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v) for k, v in fresh.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import mlflow

        now = int(1000 * time.time())
        entries = [mlflow.entities.Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
