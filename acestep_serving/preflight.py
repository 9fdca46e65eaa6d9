"""Start-up checks that run before any model loads: a busy port, a bad device, a missing model folder.

Each problem raises :class:`StartupError` whose message starts with the flag that fixes it, so the
commands print one line and exit non-zero instead of a traceback after seconds of loading.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Iterable
from pathlib import Path

from acestep_client.errors import AceStepError

DIT_FILES = ("config.json", "model.safetensors", "silence_latent.pt")


class StartupError(AceStepError):
    """A flag value this machine cannot serve with; the message names the flag."""


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """Bind ``host:port`` for a moment (port 0 or less: nothing to check)."""
    if port <= 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no conflict
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartupError(f"{flag} {port}: port {port} on {host} is already in use") from None
                if exc.errno == errno.EACCES:
                    raise StartupError(f"{flag} {port}: permission denied (ports below 1024 need privileges)") from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise StartupError(f"--host {host}: not an address of this machine") from None
                raise StartupError(f"{flag} {port}: cannot listen on {host}: {exc.strerror}") from None


def check_ports(host: str, ports: Iterable[tuple[str, int]]) -> None:
    """Every (flag, port) pair free, and no two flags asking for the same port."""
    seen: dict[int, str] = {}
    for flag, port in ports:
        if port > 0 and port in seen:
            raise StartupError(f"{flag} {port}: the same port as {seen[port]}")
        if port > 0:
            seen[port] = flag
        check_port_free(host, port, flag)


def check_device_name(device: str, flag: str = "--device") -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (without importing torch)."""
    name, _, index = device.partition(":")
    if device not in ("auto", "cpu") and (name != "cuda" or (index and not index.isdigit())):
        raise StartupError(f"{flag} {device}: must be auto, cpu, cuda or cuda:N")


def check_device(device: str, flag: str = "--device") -> None:
    """A valid name, and CUDA only where this torch build can reach a GPU."""
    check_device_name(device, flag)
    if device in ("auto", "cpu"):
        return
    import torch

    index = device.partition(":")[2]
    if torch.version.cuda is None:
        raise StartupError(f"{flag} {device}: this torch build ({torch.__version__}) has no CUDA support; "
                           f"use {flag} cpu, or install a CUDA build of torch")
    if not torch.cuda.is_available():
        raise StartupError(f"{flag} {device}: no CUDA device is visible to torch {torch.__version__}; use {flag} cpu")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise StartupError(f"{flag} {device}: this machine has {count} CUDA device(s), cuda:0-cuda:{count - 1}")


def check_dtype(dtype: str, flag: str = "--dtype") -> None:
    from acestep_serving.devices import resolve_dtype

    try:
        resolve_dtype(dtype, "cpu")
    except ValueError as exc:
        raise StartupError(f"{flag} {dtype}: {str(exc).removeprefix('--dtype ')}") from None


def _config(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_dit_config(config: dict) -> bool:
    return "is_turbo" in config or str(config.get("model_type", "")).startswith("acestep")


def _is_lm_config(config: dict) -> bool:
    """A transformers causal LM config (an encoder-only model such as the text encoder is not)."""
    if _is_dit_config(config) or "model_type" not in config:
        return False
    architectures = config.get("architectures") or ()
    return not architectures or any(str(name).endswith(("ForCausalLM", "LMHeadModel")) for name in architectures)


def _folders(root: Path, want_dit: bool) -> list[str]:
    """Model folders under ``root`` of one kind (DiT or causal LM), for the error message."""
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        config = _config(folder)
        if config is not None and (_is_dit_config(config) if want_dit else _is_lm_config(config)):
            found.append(folder.name)
    return found


def _model_folder(root: Path, name: str, flag: str, want_dit: bool) -> tuple[Path, dict]:
    kind = "DiT" if want_dit else "LM"
    folder = root / name
    if not root.is_dir():
        raise StartupError(f"--checkpoints {root}: no such folder")
    if not name or not folder.is_dir():
        available = ", ".join(_folders(root, want_dit)) or "none"
        raise StartupError(f"{flag} {name}: no {kind} model folder {folder} (available: {available})")
    config = _config(folder)
    if config is None:
        raise StartupError(f"{flag} {name}: {folder} is not a model folder (no readable config.json)")
    if not (_is_dit_config(config) if want_dit else _is_lm_config(config)):
        available = ", ".join(_folders(root, want_dit)) or "none"
        raise StartupError(f"{flag} {name}: {folder} is not a {kind} model (available: {available})")
    return folder, config


def check_dit_model(root: str | Path, name: str, flag: str = "--dit-model") -> dict:
    """The DiT folder's config (its files present); raises naming ``flag`` otherwise."""
    folder, config = _model_folder(Path(root), name, flag, want_dit=True)
    missing = [file for file in DIT_FILES if not (folder / file).is_file()]
    if missing:
        raise StartupError(f"{flag} {name}: {folder} lacks {', '.join(missing)}")
    if not (Path(root) / "vae" / "config.json").is_file():
        raise StartupError(f"--checkpoints {root}: no VAE folder ({Path(root) / 'vae'}), which every DiT needs")
    return config


def check_lm_model(root: str | Path, name: str, flag: str = "--lm-model") -> dict:
    """The LM folder's config; raises naming ``flag`` otherwise."""
    return _model_folder(Path(root), name, flag, want_dit=False)[1]


def check_model_server(component: str, args) -> None:
    """``acestep serve lm|dit|orchestrator``: ports, device, dtype and model folder, before anything loads."""
    ports = [("--port", args.port), ("--health-port", args.health_port), ("--metrics-port", args.metrics_port)]
    check_ports(args.host, ports)
    if component == "orchestrator":
        return
    check_device_name(args.device)
    if component == "dit":
        check_dit_model(args.checkpoints, args.model, "--model")
    else:
        from acestep_serving.flags import split_names

        for name in split_names(args.model) or [""]:  # the LM may serve several (--model a,b)
            check_lm_model(args.checkpoints, name, "--model")
    check_device(args.device)
    check_dtype(args.dtype)
