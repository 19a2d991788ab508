"""What jobs print. By default: the platform's own lines (one progress line per interval with rate
and ETA, results, where they went); Ray's, Ray Train's, Ray Data's and transformers' routine logs
and progress bars are off. `--verbose` (or MQT_LLAVA_VERBOSE=1) leaves the libraries as they are.

The switches are environment variables set before Ray starts, so every process of an embedded
cluster inherits them: Train workers, Data actors, Tune trials and Serve replicas alike.

Library code changes process-wide state for the rest of a process only here: `configure_output`
(called once at a job's start: the output switches and library logger levels) and
`quiet_ray_train_worker` (in a Ray Train worker). Anywhere else a change is scoped to the call that
needs it and restored after it: `scoped_environ` for a variable a library reads only from the
environment, transformers' verbosity around loads that expect unused keys (mqt_llava.model), TF32
around the training loop (mqt_llava.train.loop), warning filters around DeepSpeed's calls
(mqt_llava.train.strategies.deepspeed), a fork of the RNG for seeded builds. A lasting change made elsewhere
would be right where it was written and silently wrong elsewhere: `DS_ACCELERATOR=cpu` set by a
CPU-safe memory check once made every GPU worker's DeepSpeed keep the model on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator

from colorama.ansitowin32 import AnsiToWin32, StreamWrapper

VERBOSE_ENV = "MQT_LLAVA_VERBOSE"
QUIET_ENV = {
    "RAY_DATA_LOG_LEVEL": "WARNING",  # "Execution plan of Dataset ..." on every pass
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar on every from_pretrained
    "TRANSFORMERS_VERBOSITY": "error",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # Train V2 would print every line twice through its logger
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Creating initial MLflow database tables..." in every worker
}


QUIET_LOGGERS = ("ray.data", "ray.serve", "mlflow")  # the driver's own: execution plans, "Deleting app ..."
# Single lines dropped from a logger that otherwise says things worth seeing. DeepSpeed warns at every
# import on a machine without a GPU that it fell back to the CPU (which is right there).
QUIET_MESSAGES = {"DeepSpeed": ("Setting accelerator to CPU.",)}


class DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


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
    strip_colour_off_terminals()
    # This process imported them before the variables above were set: tell them directly.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, starts in QUIET_MESSAGES.items():  # before the library creates its logger: filters persist
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(starts))
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Writing model shards" on every save_pretrained


@contextlib.contextmanager
def scoped_environ(**values: str) -> Iterator[None]:
    """Environment variables set for the block and restored after it, for a library that reads its
    settings only from the environment (Ray Tune copies some into the trial processes it starts)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def strip_colour_off_terminals() -> None:
    """Give a stream that is not a terminal (a log file, a pipe) the text without ANSI colour codes.

    RAY_COLOR_PREFIX=0 uncolours the `(pid=...)` prefixes only: Ray's driver still paints the
    `[repeated 2x across cluster]` of its log deduplication green, whatever the settings. colorama
    (which Ray itself uses to colour) strips the codes on the way out; a terminal keeps its colours.
    """
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, StreamWrapper) or _is_terminal(stream):
            continue
        setattr(sys, name, AnsiToWin32(stream, convert=False, strip=True).stream)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def quiet_ray_train_worker() -> None:
    """Ray Train's worker logs every report at INFO, past the LoggingConfig level the driver sets:
    `Reporting training result N: TrainingReport(...)`, a long dump per checkpoint. That line comes
    from a logger named after its module's file path (`logging.getLogger(__file__)`), outside the
    `ray.train` hierarchy, so it is quieted through the module's own `logger` as well."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # an internal module: a Ray release that moves it costs the quiet line, never the training
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:
        return
    module_logger = getattr(train_context, "logger", None)
    if isinstance(module_logger, logging.Logger):
        module_logger.setLevel(logging.WARNING)


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def train_log_level() -> str:
    """Ray Train's own log level: INFO dumps a line per report and per checkpoint."""
    return "INFO" if is_verbose() else "WARNING"


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    """Units done toward a total, when a progress line is due, and the rate and ETA to print.

    The rate is measured from the first update on: whatever came before the first unit finished
    (start-up, compilation, actors loading a model) is not throughput, and an ETA computed from it is
    absurd (the sweep's first line said `ETA 86599s`). The first update only starts the clock, and
    until a rate exists the ETA reads `--`. A line is due every `every_s` seconds, every `every`
    units, and at the end.
    """

    def __init__(self, total: float, done: float = 0, every_s: float | None = None, every: int | None = None) -> None:
        self.total, self.done, self.every_s, self.every = total, done, every_s, every
        self.first: tuple[float, float] | None = None  # (time, done) at the first update
        self.last_line = time.monotonic()

    def update(self, done: float) -> bool:
        """Record progress; True when a line is due."""
        now = time.monotonic()
        self.done = done
        if self.first is None:
            # The first unit only starts the clock: a line now would have no rate to give.
            self.first = (now, done)
            return done >= self.total
        due = done >= self.total
        if self.every is not None and done % self.every == 0:
            due = True
        if self.every_s is not None and now - self.last_line >= self.every_s:
            due = True
        if due:
            self.last_line = now
        return due

    @property
    def rate(self) -> float | None:
        """Units per second since the first update; None before a second."""
        if self.first is None:
            return None
        seconds, units = time.monotonic() - self.first[0], self.done - self.first[1]
        return units / seconds if seconds > 0 and units > 0 else None

    def speed(self, unit: str = "/s", digits: int = 1) -> str:
        rate = self.rate
        return f"{rate:.{digits}f}{unit}" if rate else f"--{unit}"

    @property
    def eta(self) -> str:
        rate = self.rate
        if self.done >= self.total:
            return "ETA 0s"
        return f"ETA {format_seconds((self.total - self.done) / rate)}" if rate else "ETA --"
