"""Where jobs run: the cluster at RAY_ADDRESS (or the one `ray job submit` runs them on), else an
embedded local Ray on this machine."""

from __future__ import annotations

import logging
import os

import ray

from mqt_llava.config import REPO_ROOT


def init_ray(**kwargs) -> str:
    """Connect to or start Ray; returns "cluster" or "local"."""
    if ray.is_initialized():
        return "cluster" if os.environ.get("RAY_ADDRESS") else "local"
    kwargs.setdefault("logging_level", logging.WARNING)
    kwargs.setdefault("log_to_driver", True)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)
        return "cluster"
    # A cluster's workers import the repository's top-level modules (serve_apps) from the job's
    # uploaded working_dir; a local cluster's workers inherit this process's environment instead.
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])
    # address="local" always starts a fresh embedded instance: a stale `ray_current_cluster` file
    # from an earlier `ray start` would otherwise make ray.init() wait on a dead cluster.
    # The dashboard also serves the State API, which Ray Train's placement-group cleaner polls (without
    # it, a warning every few seconds and no clean-up of a crashed controller's resources).
    kwargs.setdefault("include_dashboard", True)
    kwargs.setdefault("dashboard_host", "127.0.0.1")
    ray.init(address="local", **kwargs)
    return "local"
