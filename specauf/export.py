"""Export a trained drafter: `python -m specauf.export ckpt=PATH out=DIR [overwrite=true] [dtype=bfloat16]`.

Writes config.json + model.safetensors (+ mask_embedding.pt for a learned mask) in the layout the field's
loaders read, described in `specauf.export_layout` and docs/method.md §10.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from specauf.cli import run_main
from specauf.export_layout import export_checkpoint


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = run_main(
        lambda: export_checkpoint(
            cfg.ckpt, cfg.out, overwrite=cfg.overwrite, dtype=cfg.dtype, mask_token_id=cfg.mask_token_id
        )
    )
    files = ", ".join(p.name for p in sorted(out.iterdir()))
    print(f"exported to {out} ({files})")


if __name__ == "__main__":
    main()
