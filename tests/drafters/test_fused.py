"""The fused (compiled) functions stay compiled through a whole run: training, validation and decoding."""

import pytest
import torch

import specauf.drafters.fused as fz
import specauf.drafters.head as head
import specauf.drafters.layers as layers
from specauf.decoding import SpeculativeDecoder, plain_greedy
from specauf.drafters.domino import DominoDrafter
from specauf.losses import CrossEntropy
from specauf.module import DrafterModule
from specauf.target import tiny_random


@pytest.fixture
def compiled_on_cpu(monkeypatch):
    """Compile the fused functions on CPU as on CUDA, with dynamo's plain backend: its guards, and so its
    recompiles, are the same as inductor's, without the minutes of C++ compilation."""
    torch._dynamo.reset()
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)  # the default; fused() raises it
    # Hitting the limit would otherwise only log a warning and run that function eagerly from then on.
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)

    def fused(fn, device):
        return fn if fz._EAGER.get() else fz._compiled(fn, "eager")

    monkeypatch.setattr(layers, "fused", fused)
    monkeypatch.setattr(head, "fused", fused)
    yield
    torch._dynamo.reset()


def test_a_domino_run_stays_within_the_compile_limit(compiled_on_cpu, chat_file):
    from specauf.data.module import ChatDataModule

    torch.manual_seed(0)
    target = tiny_random()
    drafter = DominoDrafter.from_target(target, num_layers=2, block_size=8, gru_size=16, rank=8)
    module = DrafterModule(drafter, target, CrossEntropy(gamma=7.0), optimizer=torch.optim.AdamW)
    data = ChatDataModule(
        target.tokenizer, 8, drafter.label_offset, source=str(chat_file), max_length=96, num_anchors=4, batch_size=2,
        val_size=4, min_supervised_tokens=8, cache=False,
    )  # fmt: skip
    data.setup()
    batches = iter(data.train_dataloader())
    for _ in range(3):  # bf16-mixed training: autocast, grad; batch shapes vary step to step
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = module.objective(module.predictions(next(batches)))
        loss.backward()
    with torch.no_grad():  # validation, under autocast as in training and in fp32
        for batch in data.val_dataloader():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                module.objective(module.predictions(batch))
            module.objective(module.predictions(batch))
    prompt = target.tokenizer("count to ten")["input_ids"]
    out = SpeculativeDecoder(target, drafter).generate(prompt, 24, eos_ids=[])  # the evaluation
    # Without an EOS every run emits 24 tokens, so the length says nothing: the tokens must be the target's.
    assert out.tokens == plain_greedy(target, prompt, 24, eos_ids=[])
