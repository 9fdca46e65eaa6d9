"""Stream assembly without a network: placement, gain, params, metadata, and every failure path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acestep_client import assemble as assemble_module
from acestep_client.assemble import assemble, assemble_async
from acestep_client.proto.acestep.v1 import orchestrator_pb2 as orch


def test_items_are_placed_by_start_frame_and_scaled_by_gain(kit):
    request = kit.scripted_request()
    result = assemble(kit.script(request))
    assert result.success and result.error is None
    assert result.status_message == "Generation completed successfully!"
    assert len(result.audios) == 2
    for i, audio in enumerate(result.audios):
        tensor = audio["tensor"]
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32 and tensor.device.type == "cpu"
        assert tuple(tensor.shape) == (2, kit.FRAMES[i])
        np.testing.assert_allclose(tensor.numpy(), kit.expected_audio(i), atol=1e-6)
        assert audio["sample_rate"] == 48_000
        assert audio["path"] is None  # no save_dir: nothing written
        assert audio["silent"] is False
        assert audio["params"]["seed"] == kit.SEEDS[i]
        assert audio["params"]["audio_codes"] == kit.CODES[i]
        assert audio["params"]["caption"] == "ambient piano" and audio["params"]["bpm"] == 90
        assert audio["key"] == kit.item_result(request, i).key


def test_extra_outputs_hold_lm_metadata_and_merged_time_costs(kit):
    result = assemble(kit.script(kit.scripted_request()))
    assert result.extra_outputs["lm_metadata"] == {
        "bpm": 120, "caption": "refined", "duration": 30.0, "keyscale": "C major", "language": "en",
        "timesignature": "4",
    }
    assert result.extra_outputs["time_costs"] == {
        "lm_phase1_time": 0.5, "lm_total_time": 1.0, "dit_total_time_cost": 2.0, "pipeline_total_time": 3.5,
    }


def test_lm_metadata_is_absent_when_the_stream_sent_none(kit):
    events = [e for e in kit.script(kit.scripted_request()) if e.WhichOneof("event") != "lm_metadata"]
    result = assemble(events)
    assert result.success and "lm_metadata" not in result.extra_outputs


def test_every_items_lm_metadata_is_kept_by_index_and_the_first_stays_lm_metadata(kit):
    events = kit.script(kit.scripted_request())
    at = next(i for i, e in enumerate(events) if e.WhichOneof("event") == "lm_metadata")
    second = orch.GenerateMusicResponse()
    second.CopyFrom(events[at])
    second.lm_metadata.item_index, second.lm_metadata.bpm = 1, 96
    events.insert(at, second)  # item 1's may come first
    result = assemble(events)
    by_item = result.extra_outputs["lm_metadata_by_item"]
    assert [m["bpm"] for m in by_item] == [120, 96]
    assert result.extra_outputs["lm_metadata"] == by_item[0]


def test_warnings_reach_the_status_message_and_extra_outputs(kit):
    events = kit.script(kit.scripted_request())
    done = events[-1].done
    done.warnings.add(field="caption", message="kept 170 of its 1200 tokens")
    done.warnings.add(field="seeds", message="ignored: use_random_seed is true")
    done.status_message += "\nwarning (seeds): ignored: use_random_seed is true"  # a server puts them there too
    result = assemble(events)
    assert result.extra_outputs["warnings"] == [
        {"field": "caption", "message": "kept 170 of its 1200 tokens"},
        {"field": "seeds", "message": "ignored: use_random_seed is true"},
    ]
    assert result.status_message.count("ignored: use_random_seed is true") == 1
    assert result.status_message.endswith("\nwarning (caption): kept 170 of its 1200 tokens")
    assert assemble(kit.script(kit.scripted_request())).extra_outputs["warnings"] == []


def test_progress_fractions_are_monotone_and_end_at_one(kit):
    seen: list[tuple[float, str]] = []
    result = assemble(kit.script(kit.scripted_request()), progress=lambda f, desc: seen.append((f, desc)))
    assert result.success
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions), fractions  # the script steps back 0.4 -> 0.35
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert seen[0][1] == "queued" and seen[1][1] == "lm_phase1"  # message, else the stage's name


def test_a_stream_without_done_fails(kit):
    result = assemble(kit.script(kit.scripted_request())[:-1])
    assert not result.success and result.audios == []
    assert result.error.startswith("DATA_LOSS:") and "done" in result.error


def test_audio_without_an_item_result_fails(kit):
    events = [e for e in kit.script(kit.scripted_request())
              if not (e.WhichOneof("event") == "item_result" and e.item_result.item_index == 1)]
    result = assemble(events)
    assert not result.success and "DATA_LOSS" in result.error and "[1]" in result.error


def test_zero_gain_means_unset(kit):
    events = kit.script(kit.scripted_request())
    for event in events:
        if event.WhichOneof("event") == "item_result":
            event.item_result.gain = 0.0
    result = assemble(events)
    np.testing.assert_allclose(result.audios[1]["tensor"].numpy(), kit.raw_audio(1), atol=1e-6)


def test_silent_items_are_kept_but_not_written(kit, tmp_path):
    result = assemble(kit.script(kit.scripted_request("silent")), save_dir=tmp_path, audio_format="wav")
    assert result.success
    assert result.audios[1]["silent"] is True and result.audios[1]["path"] is None
    assert [p.name for p in tmp_path.iterdir()] == [f"{result.audios[0]['key']}.wav"]


def test_a_failed_write_leaves_no_files(kit, tmp_path, monkeypatch):
    real = assemble_module.write_audio
    calls = []

    def flaky(path, *args):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, *args)

    monkeypatch.setattr(assemble_module, "write_audio", flaky)
    result = assemble(kit.script(kit.scripted_request()), save_dir=tmp_path, audio_format="wav")
    assert len(calls) == 2
    assert not result.success and "No space left" in result.error
    assert list(tmp_path.iterdir()) == []


async def test_async_assembly_matches_sync(kit, tmp_path):
    async def events():
        for event in kit.script(kit.scripted_request()):
            yield event

    result = await assemble_async(events(), save_dir=tmp_path, audio_format="flac")
    assert result.success and len(result.audios) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{a['key']}.flac" for a in result.audios)


async def test_async_errors_become_a_failed_result(kit):
    from acestep_client.errors import ResourceExhausted

    async def events():
        yield kit.script(kit.scripted_request())[0]
        raise ResourceExhausted("queue full (8 waiting)")

    result = await assemble_async(events())
    assert not result.success and result.error == "RESOURCE_EXHAUSTED: queue full (8 waiting)"


def test_events_after_done_are_a_protocol_error(kit):
    events = kit.script(kit.scripted_request())
    events.append(orch.GenerateMusicResponse(done=kit.gen_done()))
    result = assemble(events)
    assert not result.success and "after done" in result.error


@pytest.mark.parametrize("num_items", [1, 3])
def test_done_must_count_the_items(kit, num_items):
    events = kit.script(kit.scripted_request())
    events[-1].done.num_items = num_items
    result = assemble(events)
    assert not result.success and "DATA_LOSS" in result.error


def test_written_files_get_the_usual_permissions(kit, tmp_path):
    import os
    import stat

    result = assemble(kit.script(kit.scripted_request()), save_dir=tmp_path, audio_format="flac")
    mask = os.umask(0o022)
    os.umask(mask)
    for audio in result.audios:
        assert stat.S_IMODE(os.stat(audio["path"]).st_mode) == 0o666 & ~mask  # not mkstemp's 0600
