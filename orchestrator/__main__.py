"""python -m orchestrator: run the service (same flags as `acestep serve orchestrator`)."""

from orchestrator.server import main

main()
