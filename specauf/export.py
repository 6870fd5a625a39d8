"""Export a trained drafter: `python -m specauf.export ckpt=PATH out=DIR [overwrite=true] [dtype=bfloat16]`.

Writes config.json + model.safetensors in the layout described in `specauf.export_layout` (see
conf/export.yaml).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from specauf.cli import run_main
from specauf.export_layout import CONFIG_NAME, WEIGHTS_NAME, export_checkpoint


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = run_main(lambda: export_checkpoint(cfg.ckpt, cfg.out, overwrite=cfg.overwrite, dtype=cfg.dtype))
    print(f"exported to {out} ({CONFIG_NAME}, {WEIGHTS_NAME})")


if __name__ == "__main__":
    main()
