from mqt_llava.tracking import RunTracker, TrackingSpec, flatten, tracking_uri


def test_default_store_is_sqlite_beside_the_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(TrackingSpec(), str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(TrackingSpec(), str(tmp_path)) == "http://127.0.0.1:5000"
    assert tracking_uri(TrackingSpec(uri="sqlite:///x.db"), str(tmp_path)) == "sqlite:///x.db"


def test_a_run_name_maps_to_one_mlflow_run_across_attempts(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    first = RunTracker(TrackingSpec(), str(tmp_path / "runs"), "stage2")
    first.log_params({"stage": {"lr": 1e-3}, "name": "stage2"})
    first.log_metrics({"loss": 2.0}, step=1)
    first.log_text("x", "config/resolved.yaml")
    again = RunTracker(TrackingSpec(), str(tmp_path / "runs"), "stage2")  # a restarted worker / resubmitted job
    assert again.run_id == first.run_id
    again.log_params({"stage": {"lr": 1e-3}, "name": "stage2", "plan": {"steps": 3}})  # re-logging is fine
    again.log_metrics({"loss": 1.5}, step=2)
    other = RunTracker(TrackingSpec(), str(tmp_path / "runs"), "stage1")
    assert other.run_id != first.run_id

    run = again.client.get_run(first.run_id)
    assert run.data.params == {"stage.lr": "0.001", "name": "stage2", "plan.steps": "3"}
    history = [(m.step, m.value) for m in again.client.get_metric_history(first.run_id, "loss")]
    assert sorted(history) == [(1, 2.0), (2, 1.5)]
    artifacts = tmp_path / "runs" / "mlartifacts"
    assert list(artifacts.rglob("resolved.yaml")) and not (tmp_path / "mlruns").exists()


def test_flatten_nests_with_dots():
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1]}) == {"a.b": "1", "a.c.d": "None", "e": "[1]"}
