"""What every Ray Train worker runs, in a module of its own that imports the training loop only when
a worker calls it. Ray Train's controller unpickles this function with the trainer (and the
`StageRun` with it, whose module is torch-light): importing the loop there would load transformers'
model code and DeepSpeed, about 5 CPU-s on the critical path of every run's start, in a process
that never trains."""

from __future__ import annotations


def ray_train_worker(config: dict) -> None:
    """The training loop, in Ray Train's worker context, with the stage's strategy built in the worker
    (for DeepSpeed, that is where its accelerator is chosen)."""
    from mqt_llava.train.context import RayTrainContext
    from mqt_llava.train.loop import train_loop, worker_setup

    run, context = config["run"], RayTrainContext()
    train_loop(run, context, worker_setup(run, context))
