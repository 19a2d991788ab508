"""Where jobs run: the cluster at RAY_ADDRESS (or the one `ray job submit` runs them on), else an
embedded local Ray on this machine."""

from __future__ import annotations

import logging
import os

import ray

from mqt_llava.output import configure_output


def init_ray(**kwargs) -> str:
    """Connect to or start Ray; returns "cluster" or "local". Output is quiet unless the job asked
    for --verbose (mqt_llava.output), set here so that every process Ray starts inherits it."""
    configure_output()
    if ray.is_initialized():
        return "cluster" if os.environ.get("RAY_ADDRESS") else "local"
    kwargs.setdefault("logging_level", logging.WARNING)
    kwargs.setdefault("log_to_driver", True)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)
        return "cluster"
    # address="local" always starts a fresh embedded instance: a stale `ray_current_cluster` file
    # from an earlier `ray start` would otherwise make ray.init() wait on a dead cluster.
    # The dashboard also serves the State API, which Ray Train's placement-group cleaner polls (without
    # it, a warning every few seconds and no clean-up of a crashed controller's resources).
    kwargs.setdefault("include_dashboard", True)
    kwargs.setdefault("dashboard_host", "127.0.0.1")
    ray.init(address="local", **kwargs)
    return "local"
