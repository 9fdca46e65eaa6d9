"""`acestep fetch-checkpoints` (acestep_serving/fetch.py), the weights step of every LM/DiT pod, without network.

The name -> repo plan, skipping folders already present, atomic placement, and refusal of unknown names
run for real. The one network call, huggingface_hub.snapshot_download, is replaced in two tests by a
stand-in that asserts its arguments and writes what the Hub would; huggingface_hub's own offline mode
covers the failure path (a download that cannot happen leaves nothing behind).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest

from acestep_client.cli import main
from acestep_client.errors import InvalidArgument
from acestep_serving import fetch
from acestep_serving.fetch import MAIN_REPO, TEMP_PREFIX, Download, fetch_checkpoints, plan


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the Hub, even by mistake."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


class FakeHub:
    """Stands in for snapshot_download: records each call and writes the repo's files as the Hub would."""

    def __init__(self, repos: dict[str, dict[str, str]]):
        self.repos = repos
        self.calls: list[dict] = []

    def __call__(self, repo_id, *, revision=None, local_dir=None, allow_patterns=None):
        self.calls.append({"repo_id": repo_id, "revision": revision, "local_dir": Path(local_dir),
                           "allow_patterns": allow_patterns})
        root = Path(local_dir)
        (root / ".cache" / "huggingface").mkdir(parents=True)  # what a real local_dir download leaves
        for path, text in self.repos[repo_id].items():
            if allow_patterns is None or any(path.startswith(p[:-1]) for p in allow_patterns):
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_text(text)
        return str(root)


def write_model(folder: Path, marker: str = "old") -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"marker": marker}))


MAIN_FILES = {f"{name}/config.json": json.dumps({"name": name}) for name in fetch.MAIN_REPO_FOLDERS}
MAIN_FILES |= {f"{name}/model.safetensors": "weights" for name in fetch.MAIN_REPO_FOLDERS} | {"README.md": "x"}


def test_plan_maps_names_to_repos_as_released():
    assert plan(["acestep-5Hz-lm-1.7B"]) == [Download(MAIN_REPO, ("acestep-5Hz-lm-1.7B",), None, True)]
    # one call for every main-repo folder a DiT pod needs, fetched as subfolders of the one repo
    (dit,) = plan(["acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B"])
    assert dit == Download(MAIN_REPO, ("acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B"), None, True)
    assert dit.allow_patterns == ["acestep-v15-turbo/*", "vae/*", "Qwen3-Embedding-0.6B/*"]
    # other models are repos of their own whose root is the folder
    lm4b, xl = plan(["acestep-5Hz-lm-4B@v1", "acestep-v15-xl-turbo"])
    assert lm4b == Download("ACE-Step/acestep-5Hz-lm-4B", ("acestep-5Hz-lm-4B",), "v1", False)
    assert lm4b.allow_patterns is None
    assert xl.repo_id == "ACE-Step/acestep-v15-xl-turbo"
    # the main repo first, duplicates once
    assert [d.repo_id for d in plan(["acestep-v15-sft", "vae", "vae"])] == [MAIN_REPO, "ACE-Step/acestep-v15-sft"]


@pytest.mark.parametrize(("models", "named"), [
    (["acestep-v15-trubo"], "'acestep-v15-trubo'"),
    (["vae", "acestep-5Hz-lm-17B"], "'acestep-5Hz-lm-17B'"),
    (["vae@"], "empty revision"),
    (["vae@a", "acestep-v15-turbo@b"], "one revision"),
    ([], "at least one"),
])
def test_bad_names_are_refused_naming_them_before_any_download(tmp_path, models, named):
    with pytest.raises(InvalidArgument) as info:
        fetch_checkpoints(tmp_path / "ckpt", models)
    assert info.value.field == "model" and named in str(info.value)
    assert not (tmp_path / "ckpt").exists(), "nothing is created for a bad request"


def test_unknown_name_on_the_command_line_exits_2_and_names_it(tmp_path, capsys):
    assert main(["fetch-checkpoints", "--dest", str(tmp_path), "--model", "vae", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "acestep-5Hz-lm-1.7B" in err, "names the bad model and what is known"


def test_present_folders_are_skipped_without_calling_the_hub(tmp_path, monkeypatch, capsys):
    write_model(tmp_path / "acestep-5Hz-lm-1.7B")

    def no_network(*args, **kwargs):
        raise AssertionError("a present folder must not be downloaded again")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    assert fetch_checkpoints(tmp_path, ["acestep-5Hz-lm-1.7B"]) == ([], ["acestep-5Hz-lm-1.7B"])
    assert main(["fetch-checkpoints", "--dest", str(tmp_path), "--model", "acestep-5Hz-lm-1.7B"]) == 0
    assert "acestep-5Hz-lm-1.7B: present" in capsys.readouterr().out
    assert json.loads((tmp_path / "acestep-5Hz-lm-1.7B" / "config.json").read_text()) == {"marker": "old"}


def test_missing_folders_are_downloaded_once_into_place(tmp_path, monkeypatch):
    hub = FakeHub({MAIN_REPO: MAIN_FILES,
                   "ACE-Step/acestep-5Hz-lm-4B": {"config.json": "{}", "model.safetensors": "w", "README.md": "x"}})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    write_model(tmp_path / "vae")  # present: not fetched again
    (tmp_path / "Qwen3-Embedding-0.6B").mkdir()  # incomplete (no config.json): replaced
    (tmp_path / "Qwen3-Embedding-0.6B" / "partial").write_text("")
    (tmp_path / f"{TEMP_PREFIX}killed").mkdir()  # a killed earlier run

    fetched, present = fetch_checkpoints(tmp_path, ["acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B",
                                                    "acestep-5Hz-lm-4B"])
    assert fetched == ["acestep-v15-turbo", "Qwen3-Embedding-0.6B", "acestep-5Hz-lm-4B"] and present == ["vae"]
    main_call, own_call = hub.calls
    assert main_call["repo_id"] == MAIN_REPO and main_call["revision"] is None
    assert main_call["allow_patterns"] == ["acestep-v15-turbo/*", "Qwen3-Embedding-0.6B/*"], "only what is missing"
    assert own_call["repo_id"] == "ACE-Step/acestep-5Hz-lm-4B" and own_call["allow_patterns"] is None
    for call in hub.calls:  # downloads go to a temporary folder next to the targets (same file system)
        assert call["local_dir"].parent == tmp_path and call["local_dir"].name.startswith(TEMP_PREFIX)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B", "acestep-5Hz-lm-4B"]), "no temp folder left behind"
    assert json.loads((tmp_path / "acestep-v15-turbo" / "config.json").read_text()) == {"name": "acestep-v15-turbo"}
    assert not (tmp_path / "Qwen3-Embedding-0.6B" / "partial").exists()
    assert json.loads((tmp_path / "vae" / "config.json").read_text()) == {"marker": "old"}
    assert sorted(p.name for p in (tmp_path / "acestep-5Hz-lm-4B").iterdir()) == [
        "README.md", "config.json", "model.safetensors"], "no .cache from the download"

    hub.calls.clear()  # a second run (a restarted init container) downloads nothing
    assert fetch_checkpoints(tmp_path, ["acestep-v15-turbo", "acestep-5Hz-lm-4B"])[0] == []
    assert hub.calls == []


def test_a_repo_without_the_folder_fails_and_places_nothing(tmp_path, monkeypatch):
    hub = FakeHub({MAIN_REPO: {"vae/config.json": "{}", "acestep-v15-turbo/model.safetensors": "w"}})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    with pytest.raises(FileNotFoundError, match=r"acestep-v15-turbo has no config\.json"):
        fetch_checkpoints(tmp_path, ["vae", "acestep-v15-turbo"])
    assert list(tmp_path.iterdir()) == [], "all or nothing: vae is not placed either, no temp folder left"


def test_without_huggingface_hub_the_command_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # a client-only install: the import fails
    assert main(["fetch-checkpoints", "--dest", str(tmp_path), "--model", "vae"]) == 1
    err = capsys.readouterr().err.strip()
    assert "pip install 'acestep-grpc[serve]'" in err and "huggingface_hub" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_offline_download_fails_in_one_line_and_leaves_nothing(tmp_path, capsys):
    """huggingface_hub's real offline mode: the download cannot happen, the root stays clean, exit 1."""
    assert main(["fetch-checkpoints", "--dest", str(tmp_path), "--model", "acestep-5Hz-lm-0.6B"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("acestep fetch-checkpoints: error: ") and "\n" not in err
    assert list(tmp_path.iterdir()) == []
