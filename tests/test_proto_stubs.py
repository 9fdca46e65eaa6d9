"""The committed stubs are exactly what scripts/gen_protos.py makes from protos/ (no drift)."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "acestep_client" / "proto"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_protos(tmp_path):
    fresh = _generator().generate(tmp_path)
    fresh_files = {p.relative_to(tmp_path): p.read_text() for p in fresh}
    committed = {
        p.relative_to(COMMITTED): p.read_text() for p in COMMITTED.rglob("*") if p.suffix in {".py", ".pyi"}
    }
    committed = {k: v for k, v in committed.items() if k.name != "__init__.py"}
    fresh_files = {k: v for k, v in fresh_files.items() if k.name != "__init__.py"}
    assert sorted(committed) == sorted(fresh_files), "stub files differ: run python scripts/gen_protos.py"
    for name, text in fresh_files.items():
        assert committed[name] == text, f"{name} drifted from protos/: run python scripts/gen_protos.py"


def test_every_service_is_in_package_acestep_v1():
    from acestep_client.proto.acestep.v1 import dit_pb2, lm_pb2, orchestrator_pb2

    names = {
        s.full_name
        for m in (dit_pb2, lm_pb2, orchestrator_pb2)
        for s in m.DESCRIPTOR.services_by_name.values()
    }
    assert names == {
        "acestep.v1.DiffusionService",
        "acestep.v1.LanguageModelService",
        "acestep.v1.MusicGenerationService",
    }


def test_enums_have_unspecified_zero_values():
    from acestep_client.proto.acestep.v1 import dit_pb2, generation_pb2

    for module in (generation_pb2, dit_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            assert enum.values_by_number[0].name == f"{_upper_snake(enum.name)}_UNSPECIFIED"


def _upper_snake(name):
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper()
