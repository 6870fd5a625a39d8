"""Elementwise and reduction work compiled into fused kernels on CUDA; the same functions run eagerly elsewhere.

A drafter step is mostly matmuls, but in eager mode every RMSNorm, rotary embedding, SwiGLU gate and the LM
head's softmax statistics are a string of separate kernels, each a full pass over memory (on an H100 they took
about as long as the matmuls). `fused(fn, device)` returns `fn` compiled by torch.compile on CUDA, so that one
Python function becomes a few fused kernels, forward and backward. On CPU the eager function runs: it is
what the unit tests check against plain references, and CPU inductor would add compile time for no gain at
the sizes a CPU run uses.

Set `SPECAUF_COMPILE=0` to run everything eagerly on CUDA too (to debug, or to compare).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


# Each fused function meets many variants in one run: ranks (RMSNorm on hidden states and on per-head q/k),
# dtypes (bf16 under autocast, fp32 outside it), grad mode (training, validation, decoding), inputs with and
# without requires_grad, each compiled twice (static, then dynamic). Past dynamo's default of 8 per function
# it silently runs the rest eagerly (seen on an H100: Domino trainings ran RMSNorm unfused), so allow more.
RECOMPILE_LIMIT = 64


@functools.cache
def _compiled(fn: F, backend: str = "inductor") -> F:
    # Automatic dynamic shapes: the first shape compiles static; a second one makes the changed sizes
    # symbolic, so the varying numbers of rows and blocks of real batches do not recompile each step.
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(fn, backend=backend)


_EAGER = contextvars.ContextVar("specauf_eager", default=False)


def compile_enabled() -> bool:
    """False when SPECAUF_COMPILE=0."""
    return os.environ.get("SPECAUF_COMPILE", "1") != "0"


def fused(fn: F, device: torch.device) -> F:
    """`fn` compiled when it runs on CUDA (unless SPECAUF_COMPILE=0 or inside `eager()`), else `fn` itself."""
    if device.type == "cuda" and compile_enabled() and not _EAGER.get():
        return _compiled(fn)
    return fn


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run the plain functions: for code captured whole into a CUDA graph, where fusing saves no launches."""
    token = _EAGER.set(True)
    try:
        yield
    finally:
        _EAGER.reset(token)
