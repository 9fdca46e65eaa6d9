"""The `acestep` CLI through the real stack: upstream-style request files, sidecars reused, refusals, Ctrl-C, noise.

Every file in examples/requests runs verbatim through `acestep generate --from-json FILE` with only the
duration capped for CPU (and one item), against the session's stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from acestep_client import cli
from acestep_client.request_file import ALIASES

REQUESTS = sorted((Path(__file__).resolve().parents[2] / "examples" / "requests").glob("*.json"))


def test_the_examples_folder_covers_what_upstream_users_send():
    files = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in REQUESTS}
    assert len(files) >= 6
    captions = [data.get("caption") or data.get("prompt") or "" for data in files.values()]
    assert any(len(caption) > 512 for caption in captions)  # 48 of upstream's 200 examples are that long
    keys = {key for data in files.values() for key in data}
    assert {"think", "prompt", "audio_duration", "key_scale", "language", "metas", "shift"} <= keys
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in data.get("lyrics", "")) for data in files.values())


@pytest.mark.parametrize("path", REQUESTS, ids=[path.stem for path in REQUESTS])
def test_every_example_request_generates_audio_and_a_sidecar(stack, tmp_path, capsys, path):
    data = json.loads(path.read_text(encoding="utf-8"))
    out = tmp_path / "out"
    code = cli.main(["generate", "--from-json", str(path), "--duration", "10", "--batch-size", "1",
                     "--target", stack.address, "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    fmt = data.get("audio_format", "flac")
    audio = list(out.glob(f"*.{fmt}"))
    assert len(audio) == 1
    info = sf.info(audio[0])
    assert info.samplerate == 48_000 and info.channels == 2 and abs(info.duration - 10.0) < 0.1
    sidecar = json.loads(audio[0].with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["key"] == audio[0].stem and sidecar["duration"] == 10.0
    assert sidecar["caption"] == (data.get("caption") or data["prompt"])
    assert sidecar["lyrics"] == data.get("lyrics", "")
    if data.get("think", data.get("thinking", True)):
        assert sidecar["audio_codes"].count("<|audio_code_") == 10 * 5  # the LM's codes, 5 per second
    for key, value in {**data, **data.get("metas", {})}.items():  # the file's own values survived the trip
        field = ALIASES.get(key, key)
        if field in ("bpm", "keyscale", "vocal_language") and isinstance(value, (int, str)):
            assert str(sidecar[field]) == str(value), key
    for name in ("shift", "infer_method"):  # upstream's sampler options are fields by the same names
        if name in data:
            assert sidecar[name] == data[name], name
    if "timesteps" in data:  # upstream's REST form: a comma-separated string
        assert sidecar["timesteps"] == [float(t) for t in data["timesteps"].split(",")]
    if "lm_model_path" in data:
        assert "lm_model_path" in captured.err  # named, not silently dropped


def test_a_sidecar_feeds_understand_as_the_readme_says(stack, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["generate", "--caption", "calm piano", "--duration", "10", "--seeds", "3",
                     "--target", stack.address, "--out", str(out), "--quiet"]) == 0
    sidecar = next(out.glob("*.json"))
    capsys.readouterr()
    code = cli.main(["understand", "--codes", f"@{sidecar}", "--target", stack.address, "--max-new-tokens", "64"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["success"] is True


def test_turbo_refusals_name_the_flag_and_how_to_get_a_base_model(stack, tmp_path, capsys):
    code = cli.main(["generate", "--caption", "x", "--duration", "10", "--inference-steps", "50",
                     "--target", stack.address, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "INVALID_ARGUMENT: --inference-steps: " in err
    assert "--dit-model acestep-v15-base" in err and not (tmp_path / "o").exists()


def test_ctrl_c_while_the_embedded_stack_starts_stops_it_cleanly(tiny_root, caplog, capfd, monkeypatch):
    """A real SIGINT right after the DiT listens: every started server is stopped before the loop closes."""
    import gc

    from orchestrator.stack import embedded_stack

    unraisable = []  # where "Exception ignored in Server.__del__ ... Event loop is closed" would go
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    def announce(line: str) -> None:
        if line.startswith("dit: listening"):
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends; asyncio.run cancels the start

    async def run() -> None:
        async with embedded_stack(tiny_root, announce=announce, device="cpu", dtype="float32"):
            pytest.fail("the stack finished starting although it was interrupted")

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run())
    gc.collect()  # a gRPC server left running would complain now ("Event loop is closed")
    assert [str(u.exc_value) for u in unraisable] == []
    err = capfd.readouterr().err
    assert "Event loop is closed" not in err and "Traceback" not in err
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_quiet_generate_in_process_shows_only_what_needs_the_user(tiny_root, tmp_path):
    """The whole embedded path in a fresh process: no library advice, warnings or progress bars under --quiet."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # warnings would show, were they not silenced
    proc = subprocess.run(
        [sys.executable, "-m", "acestep_client.cli", "generate", "--caption", "soft piano", "--duration", "10",
         "--seeds", "1", "--no-thinking", "--checkpoints", str(tiny_root), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"WARNING: using RANDOMLY INITIALISED checkpoints in {tiny_root}: the audio (and LM text) will be noise. "
        "Put the released ACE-Step 1.5 checkpoints there for real music."]
    assert len(list(out.glob("*.flac"))) == 1 and len(list(out.glob("*.json"))) == 1


def test_advice_the_user_cannot_act_on_never_shows(tiny_root, capfd, caplog):
    """diffusers' `pip install accelerate` advice (this project loads without accelerate on purpose), even without
    --quiet; the CLI installs the filter before any server package loads."""
    import torch

    from acestep_client.cli_noise import quiet_libraries
    from dit_service.model.vae import load_vae

    quiet_libraries(quiet=False)
    load_vae(tiny_root / "vae", "cpu", torch.float32)
    shown = capfd.readouterr().err + "".join(record.getMessage() for record in caplog.records)
    assert "accelerate" not in shown and "should be kept in float32" not in shown
