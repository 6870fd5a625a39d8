"""Regenerate training data with the target: `python -m specauf.regenerate out=DIR [target=...] [engine=hf|vllm]`.

Every assistant turn of the chat data is rewritten by the target, each conditioned on the regenerated history
(specauf.regeneration; conf/regenerate.yaml). Writes DIR/conversations.jsonl, which
`python -m specauf.train data.source=DIR/conversations.jsonl` trains on, and DIR/manifest.json.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from specauf.cli import run_main
from specauf.data.conversations import load_conversations
from specauf.regeneration import VERDICTS, RegenerationStore, Sampling, regenerate_dataset

log = logging.getLogger(__name__)


def regenerate(cfg: DictConfig) -> dict[str, Any]:
    """Check the settings, load the data and the target, regenerate; the final manifest."""
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens)
    reply_filter = instantiate(cfg.filters)
    RegenerationStore.check_destination(cfg.out)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    # Before the target: a missing or empty data file fails in a second.
    conversations = load_conversations(data["source"], data["max_conversations"], data["seed"])
    target = instantiate(cfg.target)
    return regenerate_dataset(
        conversations,
        target,
        instantiate(cfg.engine),
        cfg.out,
        sampling=sampling,
        reply_filter=reply_filter,
        seed=cfg.seed,
        shard_size=cfg.shard_size,
        overwrite=cfg.overwrite,
        source=data,
    )


def report(manifest: dict[str, Any], out: Path) -> str:
    c = manifest["counts"]
    kinds = ", ".join(f"{c[f'replies_{v}']} {v}" for v in VERDICTS)
    return (
        f"regenerated {c['conversations_kept']} of {c['conversations']} conversations "
        f"({c['conversations_shortened']} shortened, {c['conversations_dropped']} dropped); "
        f"{c['replies']} replies: {kinds}; kept {c['replies_kept']}\n"
        f"wrote {out / manifest['output']['file']} ({manifest['output']['records']} records) and "
        f"{out / 'manifest.json'}\n"
        f"train on it: python -m specauf.train data.source={out / manifest['output']['file']}"
    )


@hydra.main(config_path="../conf", config_name="regenerate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    manifest = run_main(lambda: regenerate(cfg))
    print(report(manifest, Path(cfg.out).expanduser()))


if __name__ == "__main__":
    main()
