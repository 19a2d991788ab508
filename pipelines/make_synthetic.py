"""Write the tiny preset's synthetic corpus in LLaVA's file formats (deterministic for a seed).

    python pipelines/make_synthetic.py --out data/synthetic
    python pipelines/make_synthetic.py --out /tmp/small --num-pretrain 200 --num-instruct 200 --num-eval 50

Then convert with pipelines/prepare_llava.py: the 558K-like set with --image-root
<out>/LLaVA-Pretrain/images --template plain, the 665K-like set with --image-root <out>
--template vicuna_v1.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from mqt_llava.toy.corpus import CorpusSpec, write_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=2)
    for f in fields(CorpusSpec):
        if f.name == "long_sides":
            parser.add_argument("--long-sides", type=int, nargs="+", default=f.default, help="px, multiples of --cells")
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = parser.parse_args()
    spec = CorpusSpec(**{f.name: getattr(args, f.name) for f in fields(CorpusSpec)})
    out = write_corpus(args.out, spec, workers=args.workers)
    print(f"corpus written to {out}")


if __name__ == "__main__":
    main()
