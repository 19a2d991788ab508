"""Stage 1 of MQT-LLaVA on Ray Train + DeepSpeed.

    python jobs/stage1.py                                   # tiny preset, embedded local Ray
    python jobs/stage1.py --config llava-7b/stage1 --storage s3://bucket/runs
    ray job submit --working-dir . --runtime-env configs/runtime_env.yaml -- python jobs/stage1.py ...

Same --name and --storage again: resumes from the run's latest checkpoint.
"""

from mqt_llava.train.launch import main

if __name__ == "__main__":
    main("stage1")
