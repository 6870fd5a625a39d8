"""The DFlash drafter (docs/method.md §2): a short stack of target-shaped layers that drafts a whole block at once.

It owns no embedding and no LM head: block inputs are embedded with the target's (frozen) embedding and the
output goes through the target's (frozen) LM head. What trains: the context fusion (Linear(n·H → H) + RMSNorm
over the concatenated target-layer features), the layers, the final norm, and — only when the target has no
spare row to use as the mask token — a learnable mask embedding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from specauf.data.blocks import dense_block_mask, drafted_slots, flex_block_mask, pad_blocks
from specauf.drafters.head import nested_linear_cross_entropy
from specauf.drafters.layers import DrafterLayer, RMSNorm, Rotary
from specauf.errors import ConfigError
from specauf.losses import Predictions

# The packed block mask: dense for SDPA on CPU, sparse flex_attention tiles on CUDA (docs/method.md §3), with
# the number of block tokens each wants to be a multiple of (flex compiles whole 128-row query tiles).
MASK_BUILDERS: dict[str, tuple[Callable[..., Any], int]] = {
    "cpu": (dense_block_mask, 1),
    "cuda": (flex_block_mask, 128),
}


class FrozenTarget(Protocol):
    """What a drafter borrows from its target: the token embedding and the LM head weight [V, H]."""

    def embed(self, ids: Tensor) -> Tensor: ...

    @property
    def lm_head_weight(self) -> Tensor: ...


def _rope_theta(config: Any) -> float:
    # transformers 5 keeps it under rope_parameters; 4.x as a top-level attribute.
    params = getattr(config, "rope_parameters", None) or {}
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(getattr(config, "rope_theta", 10000.0))


class DFlashDrafter(nn.Module):
    """Drafts tokens for block slots from `[anchor, MASK × (B−1)]` and the target's context features.

    label_offset 0 (DFlash default): slot k (1..B−1) predicts the token at anchor + k.
    label_offset 1 (next-token, Domino's default): slot k (0..B−1) predicts the token at anchor + k + 1.
    """

    # How reports name and order this backbone.
    display_name, display_order = "DFlash", 0
    # The prediction branches `predict` returns; a loss placed on other branches is refused.
    branches: tuple[str, ...] = ("final",)
    # The exported layout (specauf/export_layout.py, docs/method.md §10). `architectures` by label offset: a
    # loader that assumes same-position labels must not read a next-token DFlash as a plain one.
    export_architectures: ClassVar[dict[int, str]] = {0: "DFlashDraftModel", 1: "DFlashNextTokenDraftModel"}
    # Our state-dict names → the names the field's loaders expect (z-lab `dflash`, vLLM, SGLang).
    export_renames: ClassVar[dict[str, str]] = {"fc_norm.weight": "hidden_norm.weight"}
    # Constructor arguments older checkpoints carry that are not architecture any more (dropped on load).
    legacy_config_keys: frozenset[str] = frozenset()

    def __init__(
        self,
        *,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        intermediate_size: int,
        num_feature_layers: int,
        num_layers: int = 5,
        block_size: int = 16,
        label_offset: int = 0,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-6,
        qk_norm: bool = True,
        mask_token_id: int | None = None,
        head_chunk_size: int = 1024,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if block_size < 2:
            raise ConfigError(f"block_size must be at least 2, got {block_size}. Fix: backbone.block_size=16")
        drafted_slots(block_size, label_offset)  # validates the offset
        # Everything needed to rebuild the drafter, stored in checkpoints and exports.
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.block_size, self.label_offset = block_size, label_offset
        self.mask_token_id, self.head_chunk_size = mask_token_id, head_chunk_size
        self.fc = nn.Linear(num_feature_layers * hidden_size, hidden_size, bias=False)
        self.fc_norm = RMSNorm(hidden_size, rms_norm_eps)
        self.layers = nn.ModuleList(
            DrafterLayer(
                hidden_size, num_heads, num_kv_heads, head_dim, intermediate_size, rms_norm_eps, qk_norm
            )
            for _ in range(num_layers)
        )
        self.norm = RMSNorm(hidden_size, rms_norm_eps)
        self.rotary = Rotary(head_dim, rope_theta)
        # No spare row in the target's table: the mask token is ours to learn.
        self.mask_embedding = nn.Parameter(torch.zeros(hidden_size)) if mask_token_id is None else None
        self._init_weights(init_std)

    def _init_weights(self, std: float) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
        if self.mask_embedding is not None:
            nn.init.normal_(self.mask_embedding, std=std)

    @classmethod
    def export_fields(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """What config.json's `dflash_config` says about this drafter beyond the DFlash keys (none here)."""
        return {}

    @classmethod
    def import_fields(cls, dflash_config: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments from an export's `dflash_config`: the inverse of `export_fields`."""
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DFlashDrafter:
        """Rebuild a drafter from the `config` it stored in a checkpoint or export (older keys dropped)."""
        return cls(**{k: v for k, v in config.items() if k not in cls.legacy_config_keys})

    @classmethod
    def from_target(cls, target: Any, **kwargs: Any) -> DFlashDrafter:
        """A drafter shaped like `target` (hidden size, heads, MLP width, RoPE θ); kwargs override."""
        cfg = target.config
        num_heads = cfg.num_attention_heads
        shape = {
            "hidden_size": cfg.hidden_size,
            "num_heads": num_heads,
            "num_kv_heads": getattr(cfg, "num_key_value_heads", None) or num_heads,
            "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // num_heads,
            "intermediate_size": cfg.intermediate_size,
            "rope_theta": _rope_theta(cfg),
            "rms_norm_eps": getattr(cfg, "rms_norm_eps", 1e-6),
            "num_feature_layers": target.num_feature_layers,
            "mask_token_id": target.mask_token_id,
        }
        shape.update({k: v for k, v in kwargs.items() if v is not None})
        return cls(**shape)

    @property
    def num_drafted(self) -> int:
        return len(drafted_slots(self.block_size, self.label_offset))

    def context_kv(self, features: Tensor, positions: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Fuse target features [b, S, n·H] into context vectors, then each layer's keys/values of them."""
        ctx = self.fc_norm(self.fc(features.to(self.fc.weight.dtype)))
        cos, sin = self.rotary(positions)
        return [layer.self_attn.context_kv(ctx, cos, sin) for layer in self.layers]

    def block_embeddings(self, block_ids: Tensor, embed: Callable[[Tensor], Tensor]) -> Tensor:
        """[b, N, B] ids (slot 0 = anchor; other slots ignored) → embeddings [b, N·B, H]."""
        b, n, bs = block_ids.shape
        anchor = embed(block_ids[:, :, :1])  # [b, N, 1, H]
        if self.mask_embedding is not None:
            mask = self.mask_embedding.to(anchor.dtype).expand(b, n, bs - 1, -1)
        else:
            mask = embed(torch.full_like(block_ids[:, :, 1:], self.mask_token_id))
        return torch.cat([anchor, mask], dim=2).reshape(b, n * bs, -1)

    def forward(
        self, block_embeds: Tensor, block_pos: Tensor, ctx_kv: list[tuple[Tensor, Tensor]], mask
    ) -> Tensor:
        """Hidden states [b, Q, H] of the block tokens (after the final norm)."""
        x = block_embeds.to(self.fc.weight.dtype)
        cos, sin = self.rotary(block_pos)
        for layer, (k, v) in zip(self.layers, ctx_kv, strict=True):
            x = layer(x, cos, sin, k, v, mask)
        return self.norm(x)

    def drafted_hidden(self, hidden: Tensor) -> Tensor:
        """[b, N·B, H] → [b, N, D, H]: the outputs of the drafted slots only."""
        b = hidden.shape[0]
        blocks = hidden.view(b, -1, self.block_size, hidden.shape[-1])
        return blocks[:, :, 1 - self.label_offset :]

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
        """Draft one block per row: anchors [b] at positions [b] → drafted token ids [b, D] (greedy).

        Every context position in `ctx_kv` is visible (the decoder only holds committed tokens before the
        anchor), unless `context_mask` [S] or [b, S] (True = visible) says otherwise: a preallocated context
        cache holds stale rows past its length. Drafted token j sits at position anchor + j + 1. With `sample`
        (logits [b, V] → tokens [b]) the tokens are drawn by it and (tokens, logits [b, D, V]) is returned:
        speculative sampling needs the distribution each draft came from.
        """
        h = self.draft_hidden(anchor_ids, anchor_pos, ctx_kv, embed, context_mask)
        logits = h @ lm_head_weight.t().to(h.dtype)
        if sample is None:
            return logits.argmax(dim=-1)
        # Parallel drafting: every slot's distribution is known before any token is drawn.
        return sample(logits.flatten(0, 1)).view(logits.shape[:2]), logits

    def draft_hidden(
        self,
        anchor_ids: Tensor,
        anchor_pos: Tensor,
        ctx_kv: list[tuple[Tensor, Tensor]],
        embed: Callable[[Tensor], Tensor],
        context_mask: Tensor | None = None,
    ) -> Tensor:
        """The parallel pass of a draft: hidden states of the drafted slots of one block per row, [b, D, H]."""
        b = anchor_ids.shape[0]
        block_ids = anchor_ids.new_zeros(b, 1, self.block_size)
        block_ids[:, 0, 0] = anchor_ids
        pos = anchor_pos[:, None] + torch.arange(self.block_size, device=anchor_ids.device)
        mask = None
        if context_mask is not None:
            # the block's own keys are all visible to each other (docs/method.md §2); [S] is shared by every
            # row, [b, S] is per row (batched decoding: each row has its own context length)
            rows = context_mask.expand(b, -1) if context_mask.dim() == 1 else context_mask
            mask = torch.cat([rows, rows.new_ones(b, self.block_size)], dim=1)[:, None, None, :]
        hidden = self(self.block_embeddings(block_ids, embed), pos, ctx_kv, mask)
        return self.drafted_hidden(hidden)[:, 0]

    def training_predictions(
        self, batch: Mapping[str, Tensor], features: Tensor, target: FrozenTarget
    ) -> dict[str, Predictions]:
        """The training forward: every block of a collated batch drafted in one packed pass, then the head.

        `batch` comes from `specauf.data.blocks.collate_blocks`; `features` [b, S, n·H] are the target's
        context features of `batch["input_ids"]`. Returns one `Predictions` per branch (`self.branches`).
        """
        b, s = batch["input_ids"].shape
        device = features.device
        ctx_kv = self.context_kv(features, torch.arange(s, device=device).expand(b, s))
        build_mask, multiple = MASK_BUILDERS.get(device.type, MASK_BUILDERS["cpu"])
        batch = pad_blocks(batch, self.block_size, multiple)
        mask = build_mask(batch["anchors"], s, self.block_size)
        block_embeds = self.block_embeddings(batch["block_ids"], target.embed)
        hidden = self(block_embeds, batch["block_pos"].flatten(1), ctx_kv, mask)
        return self.predict(
            hidden, batch["labels"], batch["valid"], target.lm_head_weight, batch["block_ids"], target.embed
        )

    def predict(
        self,
        hidden: Tensor,
        labels: Tensor,
        valid: Tensor,
        lm_head_weight: Tensor,
        block_ids: Tensor,
        embed: Callable[[Tensor], Tensor] | None = None,
    ) -> dict[str, Predictions]:
        """Per-position CE/argmax/rank of the drafted slots, flattened to [b·N, D]. Invalid rows skip the head.

        Returns {"final": ...}; a drafter with several heads (Domino) adds its other branches.
        """
        h = self.drafted_hidden(hidden)
        (final,) = _gather_predictions([h], [lm_head_weight], labels, valid, self.head_chunk_size)
        return {"final": final}


def _gather_predictions(
    inputs: list[Tensor],
    weights: list[Tensor],
    labels: Tensor,
    valid: Tensor,
    chunk_size: int,
    prefixes: tuple[int, ...] | None = None,
) -> list[Predictions]:
    """Run the chunked head on valid rows only and scatter the results back to [b·N, D], one per head
    (`prefixes` as in `nested_linear_cross_entropy`; default one head over all the terms)."""
    rows = valid.flatten()
    flat = [x.reshape(-1, x.shape[-1])[rows] for x in inputs]
    labels_v = labels.flatten()[rows]
    heads = nested_linear_cross_entropy(flat, weights, labels_v, prefixes or (len(inputs),), chunk_size)
    shape = (labels.shape[0] * labels.shape[1], labels.shape[2])
    out = []
    for ce_v, argmax_v, rank_v in heads:
        ce = torch.zeros(rows.numel(), dtype=ce_v.dtype, device=labels.device).masked_scatter(rows, ce_v)
        hit = torch.zeros_like(rows).masked_scatter(rows, argmax_v == labels_v)
        rank = torch.zeros(rows.numel(), dtype=torch.long, device=labels.device).masked_scatter(rows, rank_v)
        out.append(
            Predictions(
                ce=ce.view(shape),
                valid=valid.reshape(shape),
                hit=hit.view(shape),
                rank=rank.view(shape),
                sequences=labels.shape[0],
            )
        )
    return out
