#!/usr/bin/env python3
"""Regenerate the committed Python stubs from protos/acestep/v1/*.proto.

protoc writes imports as ``from acestep.v1 import x_pb2``; the stubs live inside the SDK package, so
the imports are rewritten to ``from acestep_client.proto.acestep.v1 import x_pb2``. The drift test
(tests/test_proto_stubs.py) calls :func:`generate` into a temporary folder and compares.

Usage: python scripts/gen_protos.py [OUT_DIR]   (default: acestep_client/proto)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
DEFAULT_OUT = REPO / "acestep_client" / "proto"
PACKAGE_PREFIX = "acestep_client.proto."
_IMPORT = re.compile(r"^from acestep\.v1 import", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Run protoc into ``out_dir`` and return the written files, sorted."""
    import grpc_tools
    from grpc_tools import protoc  # dev dependency; only needed to regenerate

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    written = sorted(p for p in out_dir.rglob("*") if p.suffix in {".py", ".pyi"})
    for path in written:
        text = _IMPORT.sub(f"from {PACKAGE_PREFIX}acestep.v1 import", path.read_text())
        path.write_text(text)
    for package_dir in {out_dir, *(p.parent for p in written)}:
        while package_dir != out_dir.parent:
            (package_dir / "__init__.py").touch()
            package_dir = package_dir.parent
    return sorted(p for p in out_dir.rglob("*") if p.suffix in {".py", ".pyi"})


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for file in generate(target):
        print(file.relative_to(target))
