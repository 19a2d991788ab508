"""Where jobs run: the cluster at RAY_ADDRESS (or the one `ray job submit` runs them on), else an
embedded local Ray on this machine."""

from __future__ import annotations

import logging
import os

import ray


def init_ray(**kwargs) -> str:
    """Connect to or start Ray; returns "cluster" or "local"."""
    if ray.is_initialized():
        return "cluster" if os.environ.get("RAY_ADDRESS") else "local"
    kwargs.setdefault("logging_level", logging.WARNING)
    kwargs.setdefault("log_to_driver", True)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)
        return "cluster"
    # address="local" always starts a fresh embedded instance: a stale `ray_current_cluster` file
    # from an earlier `ray start` would otherwise make ray.init() wait on a dead cluster.
    kwargs.setdefault("include_dashboard", False)
    ray.init(address="local", **kwargs)
    return "local"
