"""What every acestep gRPC server shares: bootstrap, health, reflection, metrics, admission, errors.

Nothing here knows about models; the service packages plug their servicers in.
"""
