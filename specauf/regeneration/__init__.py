"""Target-regenerated training data: every assistant turn rewritten by the target (docs/method.md §3).

`regenerate_dataset` runs it (shards, resume, manifest: `run.py`, `store.py`); `regenerate_shard` does one
shard turn by turn (`turns.py`); `ReplyFilter` judges each reply (`filters.py`); an `Engine` generates
(`engines.py`: Hugging Face `generate`; `vllm_engine.py`: vLLM). `python -m specauf.regenerate` is the
command.
"""

from specauf.regeneration.engines import Engine, Generation, HFEngine, Sampling
from specauf.regeneration.filters import VERDICTS, ReplyFilter, loop_period
from specauf.regeneration.run import regenerate_dataset, target_identity
from specauf.regeneration.store import MANIFEST, OUTPUT, RegenerationStore, regeneration_record
from specauf.regeneration.turns import regenerate_shard

__all__ = [
    "MANIFEST",
    "OUTPUT",
    "VERDICTS",
    "Engine",
    "Generation",
    "HFEngine",
    "RegenerationStore",
    "ReplyFilter",
    "Sampling",
    "loop_period",
    "regenerate_dataset",
    "regenerate_shard",
    "regeneration_record",
    "target_identity",
]
