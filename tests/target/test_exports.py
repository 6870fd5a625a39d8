"""Every name `specauf.target` exported before the split, and every `_target_` configs name, still resolves."""

from __future__ import annotations

import json
import re

import pytest
from hydra.utils import get_object, instantiate

import specauf.target
from tests.conftest import CONF, REPO


def stored_target_names() -> set[str]:
    """`specauf.target.*` names in the shipped configs, the legacy export fixtures and the stored runs."""
    names = set()
    stored = [
        *CONF.glob("target/*.yaml"),
        *(REPO / "tests" / "fixtures" / "legacy").rglob("config.json"),
        *(REPO / "experiments" / "results").rglob("config.yaml"),
    ]
    for path in stored:
        names.update(re.findall(r"specauf\.target\.(\w+)", path.read_text()))
    return names


def test_configs_name_targets():
    assert {"from_pretrained", "qwen3_8b", "smollm2_135m", "tiny_random"} <= stored_target_names()


@pytest.mark.parametrize("name", sorted(stored_target_names()))
def test_stored_target_resolves(name):
    assert callable(get_object(f"specauf.target.{name}"))
    assert name in specauf.target.__all__


def test_public_names_of_the_old_module():
    old = {
        "DTYPES",
        "SMOLLM2_DIRNAME",
        "SMOLLM2_MEMBER",
        "SMOLLM2_NAME",
        "SMOLLM2_PACKAGE",
        "SMOLLM2_SHA256",
        "StaticKVCache",
        "Target",
        "default_layer_ids",
        "from_pretrained",
        "qwen3_8b",
        "smollm2_135m",
        "tiny_random",
    }
    assert old <= set(specauf.target.__all__)  # new names may come; none of the old may go
    assert all(hasattr(specauf.target, name) for name in old)


@pytest.mark.parametrize("backbone", ["dflash", "domino"])
def test_legacy_export_rebuilds_its_target(backbone):
    """An old export's stored target config builds the very target it was trained against."""
    path = REPO / "tests" / "fixtures" / "legacy" / f"{backbone}_export" / "config.json"
    config = json.loads(path.read_text())["specauf"]
    target = instantiate(config["target_config"])
    assert isinstance(target, specauf.target.Target)
    assert target.name == config["target_name"] and target.layer_ids == config["target_layer_ids"]
