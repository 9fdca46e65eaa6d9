"""generate_music with the reference signature: remote front server, or the in-process pipeline."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from acestep_client import (
    AceStepClient,
    AsyncAceStepClient,
    GenerationConfig,
    GenerationParams,
    InvalidArgument,
    RemoteDiT,
    RemoteLM,
    RemoteOrchestrator,
    generate_music,
)

PARAMS = GenerationParams(caption="ambient piano", bpm=90)


def test_with_a_client_as_dit_handler(kit, server, tmp_path):
    with AceStepClient(server.address) as client:
        result = generate_music(client, None, PARAMS, GenerationConfig(), save_dir=str(tmp_path))
    assert result.success
    assert [a["path"] for a in result.audios] == [str(tmp_path / f"{a['key']}.flac") for a in result.audios]
    assert all(p.stat().st_size > 0 for p in tmp_path.iterdir())


def test_with_a_remote_orchestrator_and_its_options(server):
    result = generate_music(RemoteOrchestrator(server.address, api_key="abc"), None, PARAMS, GenerationConfig())
    assert result.success and all(a["path"] is None for a in result.audios)
    assert server.service.calls[0].metadata["x-api-key"] == "abc"


def test_with_an_address_string(server):
    assert generate_music(server.address, RemoteLM("ignored:1"), PARAMS, GenerationConfig()).success
    assert len(server.service.calls) == 1


def test_bad_input_is_a_failed_result_not_an_exception(server, tmp_path):
    result = generate_music(server.address, None, GenerationParams(caption="x", bpm=12), GenerationConfig(),
                            save_dir=str(tmp_path))
    assert result.success is False
    assert result.error.startswith("INVALID_ARGUMENT: bpm:")
    assert server.service.calls == [] and list(tmp_path.iterdir()) == []


def test_server_errors_are_failed_results(kit, server):
    result = generate_music(server.address, None, GenerationParams(caption="abort"), GenerationConfig())
    assert not result.success and result.error == f"INVALID_ARGUMENT: {kit.ABORT_DETAILS}"


def test_wrong_handlers_raise_type_error():
    with pytest.raises(TypeError, match="dit_handler"):
        generate_music(object(), None, PARAMS, GenerationConfig())
    with pytest.raises(TypeError, match="llm_handler"):
        generate_music(RemoteDiT("dit:1"), object(), PARAMS, GenerationConfig())


async def test_an_async_client_is_refused_with_a_hint():
    client = AsyncAceStepClient("127.0.0.1:1")
    try:
        with pytest.raises(TypeError, match=r"await client\.generate"):
            generate_music(client, None, PARAMS, GenerationConfig())
    finally:
        await client.close()


def test_handles_need_addresses():
    assert RemoteDiT(["a:1", "b:2"]).addresses == ("a:1", "b:2")
    for bad in ("", [], [""]):
        with pytest.raises(ValueError):
            RemoteDiT(bad)


@pytest.fixture
def fake_stack(kit, monkeypatch):
    """orchestrator.stack with a run_pipeline_events that replays the script and records its arguments."""
    module = types.ModuleType("orchestrator.stack")
    module.calls = []

    async def run_pipeline_events(request, lm_addresses, dit_addresses):
        module.calls.append((request, list(lm_addresses), list(dit_addresses)))
        if request.params.caption == "explode":
            yield kit.script(request)[0]
            raise InvalidArgument("duration", "must be between 10 and 600 seconds")
        for event in kit.script(request):
            yield event

    module.run_pipeline_events = run_pipeline_events
    monkeypatch.setitem(sys.modules, "orchestrator.stack", module)
    return module


def test_in_process_pipeline_with_dit_and_lm(kit, fake_stack, tmp_path):
    seen = []
    result = generate_music(RemoteDiT("dit:50052"), RemoteLM(["lm-a:50051", "lm-b:50051"]), PARAMS,
                            GenerationConfig(audio_format="wav"), save_dir=tmp_path,
                            progress=lambda f, desc: seen.append(f))
    assert result.success
    request, lm, dit = fake_stack.calls[0]
    assert lm == ["lm-a:50051", "lm-b:50051"] and dit == ["dit:50052"]
    assert request.params.caption == "ambient piano" and request.request_id
    np.testing.assert_allclose(result.audios[0]["tensor"].numpy(), kit.expected_audio(0), atol=1e-6)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".wav", ".wav"]
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_in_process_pipeline_without_lm(fake_stack):
    assert generate_music(RemoteDiT("dit:1"), None, PARAMS, GenerationConfig()).success
    assert fake_stack.calls[0][1] == []


async def test_in_process_pipeline_from_inside_a_running_loop(fake_stack):
    # Notebooks call the blocking API with a loop running: it must not fail with "asyncio.run() cannot be called".
    result = generate_music(RemoteDiT("dit:1"), None, PARAMS, GenerationConfig())
    assert result.success and len(result.audios) == 2


def test_in_process_pipeline_errors_are_failed_results(fake_stack, tmp_path):
    result = generate_music(RemoteDiT("dit:1"), None, GenerationParams(caption="explode"), GenerationConfig(),
                            save_dir=tmp_path)
    assert not result.success and result.error.startswith("INVALID_ARGUMENT: duration:")
    assert list(tmp_path.iterdir()) == []


def test_in_process_pipeline_validates_before_running(fake_stack):
    result = generate_music(RemoteDiT("dit:1"), None, GenerationParams(caption="x", inference_steps=0),
                            GenerationConfig())
    assert not result.success and "inference_steps" in result.error
    assert fake_stack.calls == []
