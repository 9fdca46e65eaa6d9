"""LoRA / LoKr adapters per request (issue 13): the same numbers as the adapter merged into the weights, while the
shared weights stay untouched; rows with different adapters (and none) share forwards; broken adapter folders
are refused by name and the server keeps serving; the loaded adapters stay under their byte bound.

Adapters are written in the real on-disk formats by ``dit_service.adapters.tiny`` (PEFT LoRA as upstream's
``save_pretrained`` writes it, LyCORIS LoKr as upstream's LoKr export writes it); fp32 CPU, tiny checkpoints.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from acestep_client.errors import FailedPrecondition, NotFound
from dit_service.adapters import AdapterLibrary
from dit_service.adapters.formats import LYCORIS_WEIGHTS, PEFT_CONFIG, PEFT_WEIGHTS
from dit_service.adapters.tiny import (
    ATTENTION_TARGETS,
    TINY_LOKR,
    TINY_LORA,
    decoder_linears,
    lokr_tensors,
    lora_tensors,
    targeted,
    write_lycoris_lokr,
    write_peft_lora,
)
from dit_service.engine import DiTEngine, SynthesisRequest
from dit_service.tiny_checkpoint import ADAPTERS_FOLDER, TINY_ADAPTER_BASE, VARIANTS, tiny_dit_config

from .test_batcher import batching, latents_job, max_diff, run_together

TURBO = "acestep-v15-turbo"
BASE = "acestep-v15-base"
PARITY = 1e-5  # fp32: the low-rank product and the merged weight round differently, by ~1e-7 per layer
ALL_LINEAR = "all-linear"  # a LoRA on every Linear of the decoder: timestep MLPs (run per request), MLPs, ...
REQUEST = dict(caption="lofi piano", lyrics="[verse]\nla la", vocal_language="en", duration=10, seeds=[3])


def turbo_linears() -> dict[str, tuple[int, int]]:
    return decoder_linears(tiny_dit_config(**VARIANTS[TURBO]))


@pytest.fixture(scope="module")
def adapters_dir(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two adapters ``make-tiny-checkpoints`` writes, and a LoRA on every Linear."""
    folder = tmp_path_factory.mktemp("adapters")
    for name in (TINY_LORA, TINY_LOKR):
        shutil.copytree(tiny_root / ADAPTERS_FOLDER / name, folder / name)
    linears = turbo_linears()
    tensors = lora_tensors(linears, list(linears), 3, torch.Generator().manual_seed(5))
    write_peft_lora(folder / ALL_LINEAR, tensors, rank=3, alpha=6, base_model=None, targets=["all-linear"])
    return folder


@pytest.fixture(scope="module")
def engine(tiny_root: Path, adapters_dir: Path) -> DiTEngine:
    return DiTEngine.load(tiny_root, TURBO, adapters=adapters_dir)


def merged_engine(root: Path, variant: str, engine: DiTEngine, name: str, scale: float) -> DiTEngine:
    """A fresh engine (no adapter hooks) whose decoder weights have the adapter added: W + scale · ΔW."""
    merged = DiTEngine.load(root, variant)
    adapter = engine.adapters.use(name, 1.0).adapter
    modules = dict(merged.model.decoder.named_modules())
    with torch.no_grad():
        for module, update in adapter.updates.items():
            modules[module].weight += scale * update.dense()
    return merged


def latents(engine: DiTEngine, **fields) -> torch.Tensor:
    return engine.sample_latents(SynthesisRequest(**{**REQUEST, **fields}))


# ------------------------------------------------------------------------------------------------ numbers


def test_make_tiny_checkpoints_writes_two_adapters_in_the_real_formats(tiny_root: Path):
    folder = tiny_root / ADAPTERS_FOLDER
    assert sorted(p.name for p in folder.iterdir()) == [TINY_LOKR, TINY_LORA]
    assert sorted(p.name for p in (folder / TINY_LORA).iterdir()) == [PEFT_CONFIG, PEFT_WEIGHTS]
    assert [p.name for p in (folder / TINY_LOKR).iterdir()] == [LYCORIS_WEIGHTS]
    from safetensors import safe_open

    with safe_open(str(folder / TINY_LORA / PEFT_WEIGHTS), "pt") as handle:
        keys = sorted(handle.keys())
    assert "base_model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.layers.1.cross_attn.o_proj.lora_B.weight" in keys
    assert len(keys) == 2 * 2 * 2 * len(ATTENTION_TARGETS)  # A/B x 2 layers x self/cross x q/k/v/o
    with safe_open(str(folder / TINY_LOKR / LYCORIS_WEIGHTS), "pt") as handle:
        metadata, keys = handle.metadata(), set(handle.keys())
    assert metadata["algo"] == "lokr" and "lokr_config" in metadata
    assert {"lycoris_layers_0_self_attn_q_proj.lokr_w1", "lycoris_layers_0_self_attn_q_proj.lokr_w2_a",
            "lycoris_layers_0_self_attn_q_proj.lokr_w2_b", "lycoris_layers_0_self_attn_q_proj.alpha"} <= keys
    assert TINY_ADAPTER_BASE == TURBO


def test_without_an_adapter_or_at_scale_0_the_numbers_are_the_base_models_exactly(engine, turbo_engine):
    plain = latents(turbo_engine)  # an engine without adapters: its decoder has no hooks at all
    assert torch.equal(latents(engine), plain)
    for name in (TINY_LORA, TINY_LOKR, ALL_LINEAR):
        assert torch.equal(latents(engine, adapter=name, adapter_scale=0.0), plain)
    assert max_diff(latents(engine, adapter=TINY_LORA), plain) > 0.1  # and an adapter does change them


@pytest.mark.parametrize("name", [TINY_LORA, TINY_LOKR, ALL_LINEAR])
@pytest.mark.parametrize("scale", [0.4, 1.0])
def test_an_adapter_gives_the_numbers_of_its_weights_merged_in(tiny_root, engine, name, scale):
    merged = merged_engine(tiny_root, TURBO, engine, name, scale)
    expected = latents(merged)
    got = latents(engine, adapter=name, adapter_scale=scale)
    diff = max_diff(got, expected)
    print(f"{name} scale {scale}: max |adapter - merged| = {diff:.2e}")
    assert diff <= PARITY
    assert max_diff(got, latents(engine)) > 10 * PARITY
    # The served weights were never changed: no adapter still gives the base model's numbers.
    assert torch.equal(latents(engine), latents(DiTEngine.load(tiny_root, TURBO)))


def test_with_cfg_both_halves_run_through_the_adapter(tiny_root, adapters_dir):
    """Upstream's adapter is part of the decoder, so the unconditional half of CFG goes through it too."""
    base = DiTEngine.load(tiny_root, BASE, adapters=adapters_dir)
    guided = dict(inference_steps=5, guidance_scale=4.0)
    merged = merged_engine(tiny_root, BASE, base, TINY_LOKR, 0.7)
    diff = max_diff(latents(base, adapter=TINY_LOKR, adapter_scale=0.7, **guided), latents(merged, **guided))
    print(f"CFG, LoKr on the base model: max |adapter - merged| = {diff:.2e}")
    assert diff <= PARITY


def test_requests_with_different_adapters_share_forwards_and_get_their_own_numbers(engine):
    requests = [
        dict(adapter=TINY_LORA, seeds=[3]),
        dict(adapter=TINY_LOKR, adapter_scale=0.6, seeds=[4], caption="drum and bass"),
        dict(seeds=[5], caption="folk"),
        dict(adapter=ALL_LINEAR, adapter_scale=0.8, seeds=[6, 7]),
    ]
    jobs = [latents_job(engine, **{**REQUEST, **fields}) for fields in requests]
    alone = [job() for job in jobs]
    with batching(engine) as recorder:
        together = run_together(engine, jobs)
    assert recorder.shapes("dit") == [(4, 5)] * 8  # 8 turbo steps, each one forward of all four requests
    for solo, merged in zip(alone, together, strict=True):
        assert isinstance(merged, torch.Tensor), merged
        print(f"merged vs alone: {max_diff(merged, solo):.2e}")
        assert max_diff(merged, solo) <= PARITY
    assert len({round(float(x.abs().sum()), 3) for x in alone}) == 4  # four different results


# ------------------------------------------------------------------------------------------------ refusals


def _broken_adapters(folder: Path, good: Path) -> None:
    linears = turbo_linears()
    attention = targeted(linears, ATTENTION_TARGETS)
    generator = torch.Generator().manual_seed(9)

    def lora(name: str, tensors=None, **config) -> Path:
        tensors = lora_tensors(linears, attention, 4, generator) if tensors is None else tensors
        return write_peft_lora(folder / name, tensors, rank=4, alpha=8, base_model=None, **config)

    shutil.copytree(good, folder / "good")
    (lora("bad-json") / PEFT_CONFIG).write_text('{"peft_type": "LORA", "r": 4,')
    (lora("no-weights") / PEFT_WEIGHTS).unlink()
    (lora("not-safetensors") / PEFT_WEIGHTS).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    tensors = lora_tensors(linears, attention, 4, generator)
    del tensors["base_model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    lora("missing-tensor", tensors)
    xl = decoder_linears(tiny_dit_config(**VARIANTS["acestep-v15-xl-turbo"]))
    lora("wrong-shapes", lora_tensors(xl, targeted(xl, ATTENTION_TARGETS), 4, generator))
    tensors = lora_tensors(linears, attention, 4, generator)
    tensors["base_model.model.layers.0.self_attn.q_proj.lora_B.weight"] = torch.randn(64, 3)
    lora("rank-mismatch", tensors)
    write_peft_lora(folder / "other-base", lora_tensors(linears, attention, 4, generator), rank=4, alpha=8,
                    base_model="/ckpt/acestep-v15-base")
    lora("too-large", lora_tensors(linears, attention, 300, generator))
    tensors = lora_tensors(linears, attention, 4, generator)
    tensors["base_model.model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    lora("bias", tensors)
    lora("dora", use_dora=True)
    tensors = lokr_tensors(linears, attention, 2, 4.0, generator)
    tensors["lycoris_layers_0_self_attn_q_proj.dora_scale"] = torch.ones(64, 1)
    write_lycoris_lokr(folder / "lokr-dora", tensors, rank=2, alpha=4.0)
    tensors = lokr_tensors(linears, attention, 2, 4.0, generator)
    del tensors["lycoris_layers_1_cross_attn_k_proj.lokr_w2_b"]
    write_lycoris_lokr(folder / "lokr-missing-w2", tensors, rank=2, alpha=4.0)
    (folder / "empty").mkdir()
    tensors = lora_tensors(linears, attention, 4, generator)
    tensors["base_model.model.layers.0.self_attn.k_proj.lora_B.weight"][0, 0] = float("nan")
    lora("nan-values", tensors)


@pytest.fixture(scope="module")
def strict_engine(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> DiTEngine:
    """Turbo with a folder of broken adapters beside a good one, and a 1 MiB adapter cache."""
    folder = tmp_path_factory.mktemp("broken_adapters")
    _broken_adapters(folder, tiny_root / ADAPTERS_FOLDER / TINY_LORA)
    return DiTEngine.load(tiny_root, TURBO, adapters=folder, adapter_cache_mb=1.0)


REFUSALS = [
    ("no-such-adapter", NotFound, ["not found", "good"]),
    ("bad-json", FailedPrecondition, ["adapter_config.json is not valid JSON"]),
    ("no-weights", FailedPrecondition, ["adapter_model.safetensors is missing"]),
    ("not-safetensors", FailedPrecondition, ["not a readable safetensors file"]),
    ("missing-tensor", FailedPrecondition, ["layers.1.self_attn.v_proj.lora_B.weight is missing"]),
    ("wrong-shapes", FailedPrecondition, [TURBO, "96", "another base model"]),
    ("rank-mismatch", FailedPrecondition, ["disagree on the rank"]),
    ("other-base", FailedPrecondition, [BASE, TURBO]),
    ("too-large", FailedPrecondition, ["MiB", "--adapter-cache-mb"]),
    ("bias", FailedPrecondition, ["self_attn.q_proj.bias", "not served"]),
    ("dora", FailedPrecondition, ["DoRA"]),
    ("lokr-dora", FailedPrecondition, ["DoRA"]),
    ("lokr-missing-w2", FailedPrecondition, ["lokr_w2", "missing"]),
    ("empty", FailedPrecondition, ["neither"]),
]


@pytest.mark.parametrize(("name", "error", "fragments"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_broken_adapter_is_refused_by_name_before_any_model_work_and_the_next_request_runs(
    strict_engine, name, error, fragments
):
    with pytest.raises(error) as refused:
        strict_engine.validate(SynthesisRequest(**REQUEST, adapter=name))
    message = str(refused.value)
    assert repr(name) in message
    for fragment in fragments:
        assert fragment in message
    with pytest.raises(error):  # the same answer when it runs (it validates first), cached or not
        latents(strict_engine, adapter=name)
    assert max_diff(latents(strict_engine, adapter="good"), latents(strict_engine)) > 0.1


def test_bad_numbers_are_found_when_the_adapter_loads_and_it_is_not_cached(strict_engine):
    strict_engine.validate(SynthesisRequest(adapter="nan-values"))  # the header is fine
    with pytest.raises(FailedPrecondition, match=r"'nan-values'.*NaN"):
        latents(strict_engine, adapter="nan-values")
    assert not strict_engine.adapters.cache.loaded("nan-values")
    assert latents(strict_engine, adapter="good").isfinite().all()


def test_only_servable_adapters_are_listed(strict_engine, engine):
    assert [spec.name for spec, _ in strict_engine.adapters.entries()] == ["good", "nan-values"]
    listed = {spec.name: spec.format for spec, _ in engine.adapters.entries()}
    assert listed == {ALL_LINEAR: "lora", TINY_LOKR: "lokr", TINY_LORA: "lora"}


def test_an_adapter_for_the_turbo_model_is_refused_on_the_base_model_naming_both(tiny_root, adapters_dir):
    base = DiTEngine.load(tiny_root, BASE, adapters=adapters_dir)
    with pytest.raises(FailedPrecondition, match=f"'{TINY_LORA}' was trained on {TURBO}.*not on {BASE}"):
        base.validate(SynthesisRequest(adapter=TINY_LORA))
    base.validate(SynthesisRequest(adapter=TINY_LOKR))  # declares no base model and has the same shapes


def test_no_adapter_folder_means_not_found(turbo_engine):
    with pytest.raises(NotFound, match=r"'x'.*--adapters"):
        turbo_engine.validate(SynthesisRequest(adapter="x"))


# ------------------------------------------------------------------------------------------------ cache


def test_the_cache_evicts_the_least_recently_used_under_its_bound_and_reloads(tiny_root, adapters_dir):
    engine = DiTEngine.load(tiny_root, TURBO)
    decoder = engine.model.decoder
    sizes = {name: AdapterLibrary(adapters_dir, decoder, TURBO, "cpu", torch.float32).use(name, 1.0).adapter.nbytes
             for name in (TINY_LORA, TINY_LOKR)}
    bound = max(sizes.values()) + min(sizes.values()) // 2  # room for either, not both
    engine.adapters = library = AdapterLibrary(adapters_dir, decoder, TURBO, "cpu", torch.float32, bound)
    cache = library.cache
    first = latents(engine, adapter=TINY_LORA)
    held = library.use(TINY_LORA, 1.0)  # a running request's reference
    assert cache.names() == [TINY_LORA] and cache.loads == 1
    latents(engine, adapter=TINY_LOKR)
    assert cache.names() == [TINY_LOKR] and cache.evictions == 1 and cache.used_bytes <= bound
    assert held.adapter.updates  # evicted from the cache, still usable by whoever holds it
    again = latents(engine, adapter=TINY_LORA)
    assert cache.names() == [TINY_LORA] and cache.loads == 3 and cache.evictions == 2
    assert torch.equal(again, first)
    latents(engine, adapter=TINY_LORA)
    assert cache.loads == 3  # a hit
    # all-linear is larger than the bound: not servable here, so not listed.
    assert {spec.name: loaded for spec, loaded in library.entries()} == {TINY_LOKR: False, TINY_LORA: True}


def test_a_changed_adapter_folder_is_read_again(tiny_root, tmp_path):
    shutil.copytree(tiny_root / ADAPTERS_FOLDER / TINY_LORA, tmp_path / "mine")
    engine = DiTEngine.load(tiny_root, TURBO, adapters=tmp_path)
    before = latents(engine, adapter="mine")
    linears = turbo_linears()
    tensors = lora_tensors(linears, targeted(linears, ATTENTION_TARGETS), 4, torch.Generator().manual_seed(99))
    write_peft_lora(tmp_path / "mine", tensors, rank=4, alpha=8, base_model=None)
    assert max_diff(latents(engine, adapter="mine"), before) > 0.01
    assert engine.adapters.cache.loads == 2
