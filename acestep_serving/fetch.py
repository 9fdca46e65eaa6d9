"""``acestep fetch-checkpoints``: download released ACE-Step 1.5 model folders into a checkpoint root.

Kubernetes init containers and the shared-checkpoints Job run it (k8s/README.md), so LM and DiT pods get
their weights on any cluster instead of waiting for a volume someone must fill by hand. Where each model
lives on Hugging Face (as upstream's downloader has it): the main repo ``ACE-Step/Ace-Step1.5`` holds four
folders (the default DiT, the VAE, the text encoder and the default LM); every other model is its own
repo ``ACE-Step/<name>`` whose root is the model folder.

Each folder lands in ``<dest>/<name>`` atomically: it is downloaded into a temporary folder under
``<dest>`` (same file system) and renamed into place, so a pod killed mid-download never leaves a half
folder that the next start would take for a complete one. A folder with a ``config.json`` counts as
present and is skipped: a restarted init container on the same volume costs nothing.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from acestep_client.errors import InvalidArgument

MAIN_REPO = "ACE-Step/Ace-Step1.5"
MAIN_REPO_FOLDERS = ("acestep-v15-turbo", "vae", "Qwen3-Embedding-0.6B", "acestep-5Hz-lm-1.7B")
# Models published as a repo of their own (ACE-Step/<name>), the repo root being the model folder.
OWN_REPO_MODELS = (
    "acestep-5Hz-lm-0.6B", "acestep-5Hz-lm-4B",
    "acestep-v15-sft", "acestep-v15-base",
    "acestep-v15-turbo-shift1", "acestep-v15-turbo-shift3", "acestep-v15-turbo-continuous",
    "acestep-v15-xl-base", "acestep-v15-xl-sft", "acestep-v15-xl-turbo",
)  # fmt: skip
KNOWN_MODELS = (*MAIN_REPO_FOLDERS, *OWN_REPO_MODELS)
TEMP_PREFIX = ".fetch-"  # temporary download folders under <dest>; leftovers of a killed run are removed


@dataclass(frozen=True)
class Download:
    """One ``snapshot_download`` call: a repo and the folders under the checkpoint root it provides."""

    repo_id: str
    folders: tuple[str, ...]
    revision: str | None = None
    in_subfolders: bool = False  # True: each folder is a subfolder of the repo; False: the repo root is the folder

    @property
    def allow_patterns(self) -> list[str] | None:
        return [f"{folder}/*" for folder in self.folders] if self.in_subfolders else None


def parse_model(spec: str) -> tuple[str, str | None]:
    """``name`` or ``name@revision`` (a branch, tag or commit of the model's repo)."""
    name, _, revision = spec.partition("@")
    if name not in KNOWN_MODELS:
        raise InvalidArgument("model", f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}")
    if "@" in spec and not revision:
        raise InvalidArgument("model", f"{spec!r}: an empty revision after '@'; use NAME or NAME@REVISION")
    return name, revision or None


def plan(models: Sequence[str]) -> list[Download]:
    """The downloads that provide ``models``: one call for all main-repo folders, one per other repo."""
    if not models:
        raise InvalidArgument("model", "name at least one model to fetch")
    main: dict[str, str | None] = {}
    own: dict[str, str | None] = {}
    for spec in models:
        name, revision = parse_model(spec)
        group = main if name in MAIN_REPO_FOLDERS else own
        if group.get(name, revision) != revision:
            raise InvalidArgument("model", f"{name} is asked for at two revisions: {group[name]} and {revision}")
        group[name] = revision
    downloads = []
    if main:
        revisions = set(main.values())
        if len(revisions) > 1:  # one repo, one snapshot
            raise InvalidArgument("model", f"{', '.join(main)} share the repo {MAIN_REPO}: give them one revision")
        downloads.append(Download(MAIN_REPO, tuple(main), revisions.pop(), in_subfolders=True))
    downloads += [Download(f"ACE-Step/{name}", (name,), revision) for name, revision in own.items()]
    return downloads


def is_present(folder: Path) -> bool:
    """Every released model folder has a config.json; the atomic rename means it is complete."""
    return (folder / "config.json").is_file()


def fetch_checkpoints(dest: str | Path, models: Sequence[str]) -> tuple[list[str], list[str]]:
    """Download the missing ``models`` into ``dest``; returns (fetched, already present) folder names."""
    downloads = plan(models)  # bad names fail before anything touches the disk or the network
    import huggingface_hub  # noqa: F401  a client-only install fails here, before the root is created
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{TEMP_PREFIX}*"):  # a killed earlier run; one fetcher per root at a time
        shutil.rmtree(stale, ignore_errors=True)
    fetched: list[str] = []
    present: list[str] = []
    for download in downloads:
        missing = tuple(f for f in download.folders if not is_present(root / f))
        present += [f for f in download.folders if f not in missing]
        if missing:
            _download(root, Download(download.repo_id, missing, download.revision, download.in_subfolders))
            fetched += missing
    return fetched, present


def _download(root: Path, download: Download) -> None:
    from huggingface_hub import snapshot_download  # a dependency of transformers: in the serve images

    temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
    try:
        snapshot_download(download.repo_id, revision=download.revision, local_dir=temp,
                          allow_patterns=download.allow_patterns)
        shutil.rmtree(temp / ".cache", ignore_errors=True)  # huggingface_hub's download metadata
        sources = {f: temp / f if download.in_subfolders else temp for f in download.folders}
        for folder, source in sources.items():
            if not is_present(source):
                where = f"{download.repo_id}/{folder}" if download.in_subfolders else download.repo_id
                raise FileNotFoundError(f"{where} has no config.json: not an ACE-Step model folder")
        for folder, source in sources.items():
            target = root / folder
            if target.exists():  # incomplete (no config.json): replaced, never merged into
                shutil.rmtree(target)
            source.rename(target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def run(dest: str, models: Sequence[str]) -> int:
    """The CLI command: one line per folder; exit 2 for a bad name, 1 when a download fails."""
    try:
        fetched, present = fetch_checkpoints(dest, models)
    except InvalidArgument as exc:
        print(f"acestep fetch-checkpoints: error: {exc}", file=sys.stderr)
        return 2
    except ImportError:  # no huggingface_hub: the CLI names the extra that brings it
        raise
    except Exception as exc:  # network, disk, auth: whatever huggingface_hub raises, in one line
        print(f"acestep fetch-checkpoints: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for name in present:
        print(f"{name}: present in {dest}, skipped")
    for name in fetched:
        print(f"{name}: fetched into {dest}")
    return 0
