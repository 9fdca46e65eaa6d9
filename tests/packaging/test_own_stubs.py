"""The README's recipe for Python stubs of your own: run verbatim, the stubs import next to upstream
ACE-Step's ``acestep`` package, and speak the same wire format as the SDK's stubs.

protoc names Python modules after the .proto path (``acestep/v1/x.proto`` -> ``acestep.v1.x_pb2``),
so plain generated stubs are shadowed by upstream's ``acestep`` package; the recipe moves them under
a package of the user's choosing without editing the protos.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools comes with the dev extra")

ROOT = Path(__file__).resolve().parents[2]
HEADING = "## Stubs in other languages / your own Python stubs"


def _readme_recipe() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(HEADING):]
    return re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)


def _workspace(tmp_path: Path) -> dict[str, str]:
    """protos/ as in a clone, a stand-in for upstream's ``acestep`` package, and ``python`` = this venv."""
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    upstream = tmp_path / "site" / "acestep"
    upstream.mkdir(parents=True)
    (upstream / "__init__.py").write_text('"""upstream ACE-Step 1.5 (stand-in)"""\n')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run_python(code: str, cwd: Path, env: dict[str, str], path: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**env, "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_plain_stubs_clash_with_upstream_acestep(tmp_path):
    """Why the recipe exists: with upstream installed, ``import acestep.v1`` of plain stubs fails."""
    env = _workspace(tmp_path)
    (tmp_path / "plain").mkdir()
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", "--python_out=plain",
                    "--grpc_python_out=plain", *sorted(str(p.relative_to(tmp_path)) for p in
                                                       (tmp_path / "protos").rglob("*.proto"))],
                   cwd=tmp_path, env=env, check=True, timeout=60)
    result = _run_python("import acestep.v1.orchestrator_pb2", tmp_path, env, [tmp_path / "site", tmp_path / "plain"])
    assert result.returncode != 0
    assert "No module named 'acestep.v1'" in result.stderr


def test_readme_recipe_gives_stubs_that_import_beside_upstream_and_match_the_sdk(tmp_path):
    env = _workspace(tmp_path)
    recipe = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_recipe()], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert recipe.returncode == 0, recipe.stderr
    probe = """
        import acestep
        assert acestep.__file__.endswith("site/acestep/__init__.py"), acestep.__file__  # upstream untouched
        from my_acestep_stubs.acestep.v1 import generation_pb2, orchestrator_pb2, orchestrator_pb2_grpc
        from acestep_client.proto.acestep.v1 import generation_pb2 as sdk_gen
        from acestep_client.proto.acestep.v1 import orchestrator_pb2 as sdk_orch

        mine = orchestrator_pb2.GenerateMusicRequest(params=generation_pb2.GenerationParams(caption="x", bpm=120))
        sdk = sdk_orch.GenerateMusicRequest(params=sdk_gen.GenerationParams(caption="x", bpm=120))
        assert mine.SerializeToString() == sdk.SerializeToString()
        assert orchestrator_pb2.DESCRIPTOR.package == "acestep.v1"  # the wire names do not move
        source = open(orchestrator_pb2_grpc.__file__).read()
        assert "/acestep.v1.MusicGenerationService/GenerateMusic" in source
    """
    result = _run_python(probe, tmp_path, env, [tmp_path / "site", tmp_path, ROOT])
    assert result.returncode == 0, result.stderr
