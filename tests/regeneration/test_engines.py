"""The Hugging Face engine on the tiny target (CPU): left padding, end-of-turn, seeds, the model's defaults."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from transformers import GenerationConfig

from specauf.errors import ConfigError
from specauf.evaluation.prompts import chat_prompt_ids
from specauf.regeneration import HFEngine, Sampling
from tests.conftest import CONF
from tests.regeneration.conftest import SAMPLING

GREEDY = dataclasses.replace(SAMPLING, temperature=0.0)
TEXTS = ["hi", "a much longer question about the weather in lima", "count to ten", "ok?"]


@pytest.fixture(scope="module")
def prompts(target):
    return [chat_prompt_ids(target.tokenizer, [{"role": "user", "content": t}]) for t in TEXTS]


def test_left_padded_batches_give_each_prompt_its_own_greedy_reply(target, prompts):
    assert len({len(p) for p in prompts}) == len(prompts)  # every batch mixes lengths: padding matters
    batched = HFEngine(target, batch_size=4, device="cpu").generate(prompts, GREEDY, seed=0)
    alone = HFEngine(target, batch_size=1, device="cpu").generate(prompts, GREEDY, seed=0)
    assert batched == alone
    assert all(len(r.tokens) == GREEDY.max_new_tokens and not r.finished for r in batched)  # cut at the limit


def test_a_reply_ends_at_the_first_end_of_turn_token(target, prompts):
    engine = HFEngine(target, batch_size=2, device="cpu")
    free = engine.generate(prompts[:1], GREEDY, seed=0)[0]
    # Make a greedy token that has not occurred before it end the turn.
    j = next(j for j in range(1, len(free.tokens)) if free.tokens[j] not in free.tokens[:j])
    engine.eos_ids = [*engine.eos_ids, free.tokens[j]]
    stopped = engine.generate(prompts[:1], GREEDY, seed=0)[0]
    assert stopped.finished and stopped.tokens == free.tokens[:j]


def test_sampling_is_fixed_by_the_seed_and_leaves_the_global_rng_alone(target, prompts):
    engine = HFEngine(target, batch_size=2, device="cpu")
    hot = dataclasses.replace(SAMPLING, temperature=1.5, top_p=1.0)
    state = torch.get_rng_state()
    first = engine.generate(prompts, hot, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert engine.generate(prompts, hot, seed=3) == first
    assert engine.generate(prompts, hot, seed=4) != first


def test_the_models_own_sampling_defaults_do_not_leak_in(target, prompts):
    engine = HFEngine(target, batch_size=2, device="cpu")
    clean = engine.generate(prompts, SAMPLING, seed=1)
    saved = target.model.generation_config
    # A shipped generation config like Qwen3's: transformers would fill our unset fields from it.
    target.model.generation_config = GenerationConfig(
        top_k=1, repetition_penalty=3.0, eos_token_id=saved.eos_token_id
    )
    try:
        assert engine.generate(prompts, SAMPLING, seed=1) == clean
        assert target.model.generation_config.top_k == 1  # put back afterwards
    finally:
        target.model.generation_config = saved


@pytest.mark.parametrize(
    "bad", [{"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"max_new_tokens": 0}]
)
def test_bad_sampling_settings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="Fix"):
        Sampling(**bad)


def test_a_bad_batch_size_is_a_config_error(target):
    with pytest.raises(ConfigError, match="batch_size"):
        HFEngine(target, batch_size=0, device="cpu")


@pytest.mark.parametrize("engine", sorted(p.stem for p in (CONF / "engine").glob("*.yaml")))
def test_every_engine_config_composes_and_names_an_importable_class(engine):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("regenerate", overrides=[f"engine={engine}", "out=/tmp/unused"])
    assert cfg.engine._partial_ and callable(get_object(cfg.engine._target_))
