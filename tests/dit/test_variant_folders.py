"""DiT variant folders are known by their config.json, not their names (upstream ships many turbo variants)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from acestep_client.errors import NotFound
from dit_service.engine import DiTEngine
from dit_service.loading import available_variants
from dit_service.model.config import AceStepConfig


@pytest.fixture
def root_copy(tiny_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_root, copy, ignore=shutil.ignore_patterns("acestep-v15-xl-*", "acestep-v15-sft"))
    return copy


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_unknown_variant_folder_with_a_valid_config_loads(root_copy: Path, synth):
    # A fine-tune or a future upstream variant: any name, flags and extra fields from its config.json.
    shutil.copytree(root_copy / "acestep-v15-turbo", root_copy / "my-turbo-finetune")
    _edit_config(root_copy / "my-turbo-finetune", some_future_field={"a": 1})
    assert "my-turbo-finetune" in available_variants(root_copy)
    engine = DiTEngine.load(root_copy, "my-turbo-finetune")
    assert engine.is_turbo and engine.config.extra["some_future_field"] == {"a": 1}
    result = synth(engine, caption="x", duration=10, seeds=[1])
    assert len(result.done) == 1 and len(result.steps) == 8


def test_turbo_flag_comes_from_config_not_folder_name(root_copy: Path):
    # Named like upstream's turbo variants but configured as a CFG model (and the reverse).
    shutil.copytree(root_copy / "acestep-v15-turbo", root_copy / "acestep-v15-turbo-fix-inst-shift3")
    _edit_config(root_copy / "acestep-v15-turbo-fix-inst-shift3", is_turbo=False, is_lego_sft=True)
    shutil.copytree(root_copy / "acestep-v15-base", root_copy / "acestep-v15-base-sft-fix-inst")
    _edit_config(root_copy / "acestep-v15-base-sft-fix-inst", is_turbo=True)
    not_turbo = DiTEngine.load(root_copy, "acestep-v15-turbo-fix-inst-shift3")
    assert not not_turbo.is_turbo and not_turbo.config.is_lego_sft
    assert DiTEngine.load(root_copy, "acestep-v15-base-sft-fix-inst").is_turbo


def test_folders_without_a_dit_config_are_not_variants(root_copy: Path):
    (root_copy / "notes").mkdir()
    (root_copy / "notes" / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    assert available_variants(root_copy) == ["acestep-v15-base", "acestep-v15-turbo"]
    with pytest.raises(NotFound, match="acestep-v15-base"):
        DiTEngine.load(root_copy, "notes-missing")


def test_config_fields_round_trip_through_config_json():
    config = AceStepConfig.from_dict({"is_turbo": True, "is_lego_sft": True, "auto_map": {"AutoModel": "m.C"}})
    again = AceStepConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.is_turbo and again.is_lego_sft and again.extra["auto_map"] == {"AutoModel": "m.C"}
