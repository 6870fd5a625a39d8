"""Domino (docs/method.md §5): the DFlash backbone plus a small causal correction head.

The backbone drafts all slots in parallel (`base_logits[k] = lm_head(z_k)`). The head adds what a parallel
drafter cannot know — which tokens it actually drafted before slot k — through a bias-free GRU over the
embeddings of the block's realised tokens `[anchor, t1, …, tk]` (state s_k) and a low-rank bottleneck:

    final_logits[k] = base_logits[k] + W2 · SiLU(W1 · [z_k ; s_k])      for k ≥ p   (base only for k < p)

Training is teacher-forced (the GRU reads the gold tokens); `predict` returns both branches, and the training
objective combines them (`specauf.losses.BaseAnchoredCurriculum`: `L = (1 − λ)·L_final + λ·L_base`). At
inference only the GRU cell and the rank-r projection run sequentially.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from specauf.drafters.dflash import DFlashDrafter, _gather_predictions
from specauf.errors import CheckpointError, ConfigError
from specauf.losses import Predictions


class DominoDrafter(DFlashDrafter):
    """DFlash backbone (next-token aligned by default) + GRU/low-rank correction head."""

    display_name, display_order = "Domino", 1
    branches = ("base", "final")
    # Exported in the layout SpecForge trains and SGLang serves (docs/method.md §10): the DFlash architecture
    # with `dflash_config.projector_type: domino`; the math maps one to one (tests/test_interop.py).
    export_architectures: ClassVar[dict[int, str]] = {1: "DFlashDraftModel", 0: "DFlashDraftModel"}
    export_renames: ClassVar[dict[str, str]] = {
        **DFlashDrafter.export_renames,
        "gru.weight_ih_l0": "prefix_gru.weight_ih_l0",
        "gru.weight_hh_l0": "prefix_gru.weight_hh_l0",
        "w1.weight": "embed_proj.0.weight",  # Linear(H + G → rank), then SiLU (embed_proj.1, no weights)
        "w2.weight": "embed_proj.2.weight",  # Linear(rank → vocabulary)
    }
    # The curriculum was a drafter setting before it moved to the training objective (specauf.losses).
    legacy_config_keys = frozenset({"curriculum_fraction"})

    @classmethod
    def export_fields(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "projector_type": "domino",
            "emb_dim": config["rank"],
            "gru_hidden_dim": config["gru_size"],
            "pure_draft_prefix_len": config["base_slots"],
            "shift_label": config["label_offset"] == 1,
        }

    @classmethod
    def import_fields(cls, dflash_config: Mapping[str, Any]) -> dict[str, Any]:
        if dflash_config.get("projector_type") != "domino":
            raise CheckpointError(
                f"a Domino export needs dflash_config.projector_type 'domino', got "
                f"{dflash_config.get('projector_type')!r}. Fix: re-export the drafter from its checkpoint"
            )
        return {
            "rank": int(dflash_config["emb_dim"]),
            "gru_size": int(dflash_config["gru_hidden_dim"]),
            "base_slots": int(dflash_config["pure_draft_prefix_len"]),
            "label_offset": int(bool(dflash_config["shift_label"])),
        }

    def __init__(
        self,
        *,
        vocab_size: int,
        gru_size: int | None = None,
        rank: int = 256,
        base_slots: int = 1,
        label_offset: int = 1,
        **backbone: Any,
    ) -> None:
        super().__init__(label_offset=label_offset, **backbone)
        hidden = backbone["hidden_size"]
        # Reference: GRU 1024 for Qwen3-8B's 4096 hidden; scale with the target.
        gru_size = gru_size or max(64, hidden // 4)
        if not 0 <= base_slots <= self.num_drafted:
            raise ConfigError(
                f"base_slots must be in [0, {self.num_drafted}], got {base_slots}. Fix: backbone.base_slots=1"
            )
        self.config.update(vocab_size=vocab_size, gru_size=gru_size, rank=rank, base_slots=base_slots)
        self.base_slots = base_slots
        self.gru = nn.GRU(hidden, gru_size, num_layers=1, bias=False, batch_first=True)
        self.w1 = nn.Linear(hidden + gru_size, rank, bias=False)
        self.w2 = nn.Linear(rank, vocab_size, bias=False)
        nn.init.normal_(self.w1.weight, std=backbone.get("init_std", 0.02))
        # Zero-initialised output: training starts from exactly the backbone's predictions.
        nn.init.zeros_(self.w2.weight)

    @classmethod
    def from_target(cls, target: Any, **kwargs: Any) -> DominoDrafter:
        kwargs.setdefault("vocab_size", target.vocab_size)
        return super().from_target(target, **kwargs)

    # -- the correction head ---------------------------------------------------------------------------------
    def correction_input(self, z: Tensor, realised: Tensor) -> Tensor:
        """z [M, D, H] drafted-slot states, realised [M, D, H] embeddings of [anchor, t1, …, t_{D−1}]
        → the bottleneck activations c [M, D, r] (zero on the first `base_slots` slots)."""
        states, _ = self.gru(realised.to(z.dtype))
        c = F.silu(self.w1(torch.cat([z, states], dim=-1)))
        keep = torch.ones(c.shape[1], device=c.device, dtype=c.dtype)
        keep[: self.base_slots] = 0
        return c * keep[:, None]

    def _realised(self, block_ids: Tensor, labels: Tensor, embed: Callable[[Tensor], Tensor]) -> Tensor:
        # Teacher forcing: the GRU reads the anchor then the gold tokens of the earlier slots.
        tokens = torch.cat([block_ids[:, :, :1], labels[:, :, :-1]], dim=2)
        return embed(tokens)

    def predict(
        self,
        hidden: Tensor,
        labels: Tensor,
        valid: Tensor,
        lm_head_weight: Tensor,
        block_ids: Tensor,
        embed: Callable[[Tensor], Tensor] | None = None,
    ) -> dict[str, Predictions]:
        if embed is None:
            raise ValueError("DominoDrafter.predict needs `embed` (the target's embedding) for its GRU")
        z = self.drafted_hidden(hidden)  # [b, N, D, H]
        b, n, d, h = z.shape
        c = self.correction_input(
            z.reshape(b * n, d, h), self._realised(block_ids, labels, embed).flatten(0, 1)
        )
        # Both heads in one pass: base = z·W, final = base + c·W2, so the vocabulary-wide z·W runs once.
        base, final = _gather_predictions(
            [z, c.view(b, n, d, -1)], [lm_head_weight, self.w2.weight], labels, valid, self.head_chunk_size,
            prefixes=(1, 2),
        )  # fmt: skip
        return {"base": base, "final": final}

    # -- decoding --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def draft(
        self,
        anchor_ids: Tensor,
        anchor_pos: Tensor,
        ctx_kv: list[tuple[Tensor, Tensor]],
        embed: Callable[[Tensor], Tensor],
        lm_head_weight: Tensor,
        context_mask: Tensor | None = None,
        sample: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """One parallel backbone pass, then the sequential head: token k+1 from base + correction.

        With `sample`, each token is drawn from its logits before the GRU reads it, and (tokens, logits) is
        returned (as `DFlashDrafter.draft`): slot k's distribution depends on the tokens drawn before it.
        """
        z = self.draft_hidden(anchor_ids, anchor_pos, ctx_kv, embed, context_mask)
        base_logits = z @ lm_head_weight.t().to(z.dtype)  # [b, D, V]
        tokens, all_logits = [], []
        state = None
        prev = anchor_ids
        for k in range(self.num_drafted):
            out, state = self.gru(embed(prev)[:, None].to(z.dtype), state)
            logits = base_logits[:, k]
            if k >= self.base_slots:
                logits = logits + self.w2(F.silu(self.w1(torch.cat([z[:, k], out[:, 0]], dim=-1))))
            prev = logits.argmax(dim=-1) if sample is None else sample(logits)
            tokens.append(prev)
            all_logits.append(logits)
        if sample is None:
            return torch.stack(tokens, dim=1)
        return torch.stack(tokens, dim=1), torch.stack(all_logits, dim=1)
