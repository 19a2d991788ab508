"""Evaluate an export on the paper's benchmarks at several visual-token budgets.

    python jobs/evaluate.py --model runs/train/tiny-stage2/export --data-root runs/quickstart/benchmarks \
        --benchmarks pope,vqav2,gqa,scienceqa,mme,mmbench --budgets 2,8,32
    ray job submit -- python jobs/evaluate.py --model /shared/runs/llava-7b-stage2/export --gpu --actors 8

Writes results.csv, table.md (the paper's Table 1 shape), advisor.md, plots/, and an MLflow run.
A rerun with the same --out skips the (benchmark, budget) pairs already predicted.
"""

import sys

from mqt_llava.eval.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
