"""vLLM's offline engine (`vllm.LLM`) behind the `Engine` interface: `engine=vllm`.

Written against vLLM's documented offline API (`LLM(...)`, `LLM.generate` with token-id prompts and one
`SamplingParams` per prompt) and NOT run here: vLLM is not installed on the machines specauf is tested on.
Prompts are the ones the HF engine gets (rendered by specauf, so both engines see identical tokens); each
prompt gets its own seed, so vLLM's replies do not depend on how it batches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from specauf.errors import ConfigError
from specauf.regeneration.engines import Generation, Sampling, split_reply

INSTALL_FIX = "Fix: pip install vllm (on a machine with a CUDA GPU), or engine=hf"


class VLLMEngine:
    """The target's weights served by vLLM. `model` defaults to the directory or hub id the target was loaded
    from; `llm_kwargs` go to `vllm.LLM` as they are (any of its engine arguments)."""

    def __init__(
        self,
        target: Any,
        model: str | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        llm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        try:
            import vllm
        except ImportError as err:
            raise ConfigError(
                f"engine=vllm needs the vllm package, which is not installed ({err}). {INSTALL_FIX}"
            ) from None
        self._vllm = vllm
        self.model = model or str(getattr(target.model.config, "_name_or_path", "") or "")
        if not self.model:
            raise ConfigError(
                f"target {target.name} records no path vLLM could load. Fix: engine.model=<dir or hub id>"
            )
        self.eos_ids = set(target.eos_token_ids)
        self.args = {
            "model": self.model,
            "tokenizer": self.model,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "dtype": dtype,
            "max_model_len": max_model_len,
            "enforce_eager": enforce_eager,
            **(llm_kwargs or {}),
        }
        self._llm: Any = None  # built on the first call: a finished or refused run never loads the weights

    @property
    def settings(self) -> dict[str, Any]:
        return {"engine": "vllm", "vllm": self._vllm.__version__, **self.args}

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling, seed: int) -> list[Generation]:
        if self._llm is None:
            self._llm = self._vllm.LLM(**self.args)
        params = [
            self._vllm.SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k or -1,  # -1: off (vLLM's spelling, accepted by old and new versions)
                max_tokens=sampling.max_new_tokens,
                seed=(seed + i) & 0x7FFF_FFFF_FFFF_FFFF,
                stop_token_ids=sorted(self.eos_ids),
            )
            for i in range(len(prompts))
        ]
        outputs = self._llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        replies = []
        for output in outputs:
            completion = output.outputs[0]
            reply = split_reply(list(completion.token_ids), self.eos_ids)
            # vLLM may leave the stop token out of token_ids; its finish_reason still says "stop".
            replies.append(Generation(reply.tokens, reply.finished or completion.finish_reason == "stop"))
        return replies
