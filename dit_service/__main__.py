"""python -m dit_service: run the service (same flags as `acestep serve dit`)."""

from dit_service.server import main

main()
