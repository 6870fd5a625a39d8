"""Write a seeded subset of the packaged ShareGPT as a chat .jsonl (e.g. to carry to a machine without PyPI).

    python -m experiments.sharegpt_subset --n 5000 --out sharegpt_5k.jsonl

The H100 runs in experiments/results used `--n 5000 --seed 0` (the file the run scripts call sharegpt_5k.jsonl).
"""

from __future__ import annotations

import argparse
import json

from specauf.data.conversations import load_conversations


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # load_conversations shuffles with the seed, then keeps the first n: the same subset for the same seed.
    conversations = load_conversations("sharegpt", max_conversations=args.n, seed=args.seed)
    with open(args.out, "w") as f:
        for messages in conversations:
            f.write(json.dumps({"messages": messages}) + "\n")
    print(f"wrote {len(conversations)} conversations to {args.out}")


if __name__ == "__main__":
    main()
