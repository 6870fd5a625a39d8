"""`engine=vllm` without vLLM installed: one clear error naming the install fix (vLLM itself is untested here)."""

from __future__ import annotations

import importlib.util

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from specauf.errors import ConfigError
from tests.conftest import CONF

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")


def test_the_vllm_engine_config_names_the_install_fix_when_vllm_is_absent(target):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("regenerate", overrides=["engine=vllm", "out=/tmp/unused"])
    factory = instantiate(cfg.engine)
    with pytest.raises(ConfigError, match=r"engine=vllm needs the vllm package.*pip install vllm.*engine=hf"):
        factory(target=target)
