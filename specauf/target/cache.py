"""The decoder's preallocated KV cache: a fixed-address StaticCache that rolls back by a length reset."""

from __future__ import annotations

from transformers import PretrainedConfig, StaticCache


class StaticKVCache(StaticCache):
    """transformers' StaticCache, with its length also kept on the host and a rollback.

    The tensors are preallocated for `max_length` positions and written at the layer's running length; a
    rollback only resets that length, in place on the device (no copy, no sync; the addresses a CUDA graph
    captured stay valid). Entries past the length are stale but never read: the causal mask starts at the
    length. The host copy answers length checks without waiting for the GPU.
    """

    def __init__(self, config: PretrainedConfig, max_length: int) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        super().__init__(config=config, max_cache_len=max_length)
        self.max_length, self.length = max_length, 0

    def rollback(self, length: int) -> None:
        """Forget every position from `length` on (they are overwritten by the next step)."""
        for layer in self.layers:
            layer.cumulative_length.fill_(length)
        self.length = length
