"""What jobs print. By default: the platform's own lines (one progress line per interval with rate
and ETA, results, where they went); Ray's, Ray Train's, Ray Data's and transformers' routine logs
and progress bars are off. `--verbose` (or MQT_LLAVA_VERBOSE=1) leaves the libraries as they are.

The switches are environment variables set before Ray starts, so every process of an embedded
cluster inherits them: Train workers, Data actors, Tune trials and Serve replicas alike.
"""

from __future__ import annotations

import os
import sys

VERBOSE_ENV = "MQT_LLAVA_VERBOSE"
QUIET_ENV = {
    "RAY_DATA_LOG_LEVEL": "WARNING",  # "Execution plan of Dataset ..." on every pass
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar on every from_pretrained
    "TRANSFORMERS_VERBOSITY": "error",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # Train V2 would print every line twice through its logger
}


def configure_output(verbose: bool = False) -> None:
    """Call once at a job's start, before Ray starts."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        return
    if is_verbose():
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no ANSI colour codes in a log file


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def train_log_level() -> str:
    """Ray Train's own log level: INFO dumps a line per report and per checkpoint."""
    return "INFO" if is_verbose() else "WARNING"
