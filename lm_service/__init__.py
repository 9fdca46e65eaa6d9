"""ACE-Step 1.5 5 Hz LM planner core (pure PyTorch/transformers, no grpc).

Public API: :mod:`lm_service.planner` (``Planner``, ``PlanRequest``, the event dataclasses and
``codes_to_string``). ``python -m lm_service.tiny_checkpoint DIR`` writes a tiny random checkpoint
in the released layout for tests and offline demos (its outputs are noise).
"""
