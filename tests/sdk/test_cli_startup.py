"""Start-up failures of `acestep serve ...`: one line naming the flag, exit 1, checked before any model loads."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
import torch

from acestep_client import cli


@pytest.fixture
def root(tmp_path):
    """A checkpoint root with the released layout's folders and configs (the checks read nothing else)."""
    for name, config in (("acestep-v15-turbo", {"model_type": "acestep", "is_turbo": True}),
                         ("acestep-v15-base", {"model_type": "acestep", "is_turbo": False}),
                         ("acestep-5Hz-lm-1.7B", {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}),
                         ("vae", {"_class_name": "AutoencoderOobleck"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    for name in ("acestep-v15-turbo", "acestep-v15-base"):
        (tmp_path / name / "model.safetensors").write_bytes(b"")
        (tmp_path / name / "silence_latent.pt").write_bytes(b"")
    return tmp_path


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def _one_line_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 1, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_serve_all_on_a_busy_port_says_so(root, busy_port, capsys):
    line = _one_line_error(capsys, cli.main(["serve", "all", "--checkpoints", str(root), "--port", str(busy_port)]))
    assert line == f"acestep serve all: error: --port {busy_port}: port {busy_port} on 127.0.0.1 is already in use"


def test_serve_all_checks_every_port_flag(root, busy_port, capsys):
    line = _one_line_error(capsys, cli.main(["serve", "all", "--checkpoints", str(root), "--port", "0",
                                             "--dit-port", str(busy_port)]))
    assert f"--dit-port {busy_port}: " in line and "already in use" in line


@pytest.mark.parametrize(("model", "message"), [
    ("acestep-v15-turbo-typo", "--dit-model acestep-v15-turbo-typo: no DiT model folder"),
    ("acestep-5Hz-lm-1.7B", "--dit-model acestep-5Hz-lm-1.7B:"),
])
def test_serve_all_with_an_unknown_dit_model_lists_the_ones_there(root, capsys, model, message):
    line = _one_line_error(capsys, cli.main(["serve", "all", "--checkpoints", str(root), "--port", "0",
                                             "--dit-model", model]))
    assert message in line and "available: acestep-v15-base, acestep-v15-turbo" in line
    assert not (root / "RANDOM_WEIGHTS.txt").exists()  # a folder of checkpoints is never written to


def test_serve_all_with_an_lm_folder_that_is_no_lm(root, capsys):
    line = _one_line_error(capsys, cli.main(["serve", "all", "--checkpoints", str(root), "--port", "0",
                                             "--lm-model", "vae"]))
    assert "--lm-model vae: " in line and "not a LM model (available: acestep-5Hz-lm-1.7B)" in line


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"])
def test_serve_all_with_a_device_name_torch_does_not_know(root, capsys, device):
    line = _one_line_error(capsys, cli.main(["serve", "all", "--checkpoints", str(root), "--port", "0",
                                             "--device", device]))
    assert line == f"acestep serve all: error: --device {device}: must be auto, cpu, cuda or cuda:N"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that cannot reach a GPU")
def test_serve_all_with_cuda_on_a_cpu_only_torch(root, capsys):
    line = _one_line_error(capsys, cli.main(["serve", "all", "--checkpoints", str(root), "--port", "0",
                                             "--device", "cuda"]))
    assert line.startswith("acestep serve all: error: --device cuda: ") and "--device cpu" in line


def test_single_services_check_their_flags_before_loading(root, busy_port, capsys):
    line = _one_line_error(capsys, cli.main(["serve", "dit", "--checkpoints", str(root), "--port", "0",
                                             "--model", "nope"]))
    assert line.startswith("acestep serve dit: error: --model nope: no DiT model folder")
    line = _one_line_error(capsys, cli.main(["serve", "lm", "--checkpoints", str(root), "--port", "0",
                                             "--device", "gpu"]))
    assert line == "acestep serve lm: error: --device gpu: must be auto, cpu, cuda or cuda:N"
    line = _one_line_error(capsys, cli.main(["serve", "orchestrator", "--port", str(busy_port)]))
    assert line.startswith(f"acestep serve orchestrator: error: --port {busy_port}: ")


def test_generate_names_the_dit_model_flag_before_loading(root, tmp_path, capsys):
    code = cli.main(["generate", "--caption", "x", "--checkpoints", str(root), "--dit-model", "acestep-v15-sfft",
                     "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "--dit-model acestep-v15-sfft: no DiT model folder" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_serve_all_reports_a_model_that_fails_to_load_in_one_line(root, capsys):
    """Folders that pass the checks but hold no loadable weights (empty files): one line, no traceback."""
    line = _one_line_error(capsys, cli.main(["serve", "all", "--checkpoints", str(root), "--port", "0",
                                             "--device", "cpu", "--log-level", "ERROR"]))
    assert line.startswith("acestep serve all: error: loading the models failed: ")
    assert line.endswith("(--log-level DEBUG shows where)")
