"""ACE-Step 1.5 DiT side: pure-PyTorch model code, samplers, tasks and windowed VAE decode.

Nothing in this package imports grpc; the gRPC server (``dit_service.server``) is a thin adapter over
:class:`dit_service.engine.DiTEngine`.
"""
