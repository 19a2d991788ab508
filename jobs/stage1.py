"""Stage 1 of MQT-LLaVA: Ray Train + DeepSpeed, or the same loop under torchrun without Ray.

    python jobs/stage1.py                                   # tiny preset, embedded local Ray
    python jobs/stage1.py --config llava-7b/stage1 --storage s3://bucket/runs
    ray job submit --working-dir . --runtime-env configs/runtime_env.yaml -- python jobs/stage1.py ...
    torchrun --nproc-per-node 8 jobs/stage1.py --config llava-7b/stage1 --set num_workers=8   # no Ray

Same --name and --storage again: resumes from the run's latest checkpoint.
"""

from mqt_llava.train.cli import main

if __name__ == "__main__":
    main("stage1")
