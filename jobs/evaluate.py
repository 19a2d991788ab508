"""Evaluate an export on the paper's benchmarks at several visual-token budgets.

    python jobs/evaluate.py                                  # the tiny preset's sweep (tiny/evaluate)
    python jobs/evaluate.py --set model=runs/train/tiny-stage2/export --set budgets=2,8,M
    ray job submit -- python jobs/evaluate.py --config llava-7b/evaluate --set model=/shared/runs/llava-7b-stage2/export

Writes results.csv, table.md (the paper's Table 1 shape), advisor.md, plots/, and an MLflow run.
A rerun with the same `out` skips the (benchmark, budget) pairs already predicted.
"""

import sys

from mqt_llava.eval.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
