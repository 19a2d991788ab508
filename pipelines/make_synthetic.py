"""Write the tiny preset's synthetic corpus in LLaVA's file formats (deterministic for a seed).

    python pipelines/make_synthetic.py                           # tiny/synthetic: ./data/synthetic
    python pipelines/make_synthetic.py --set out=/tmp/small --set corpus.num_pretrain=200 \\
        --set corpus.num_instruct=200 --set corpus.num_eval=50

The spec is a SyntheticSpec (mqt_llava.toy.spec). Then convert it with pipelines/prepare_llava.py:
--config tiny/prepare_558k (the 558K-like set) and --config tiny/prepare_665k (the 665K-like set).
"""

from __future__ import annotations

import sys

from mqt_llava.command import spec_parser
from mqt_llava.config import ConfigError, load_config
from mqt_llava.toy.corpus import write_corpus
from mqt_llava.toy.spec import SyntheticSpec


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser(SyntheticSpec, __doc__, "tiny/synthetic", "corpus.num_pretrain=200")
    args = parser.parse_args(argv)
    try:
        spec = load_config(SyntheticSpec, args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    out = write_corpus(spec.out, spec.corpus, workers=spec.workers)
    print(f"corpus written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
