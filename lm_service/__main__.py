"""python -m lm_service: run the service (same flags as `acestep serve lm`)."""

from lm_service.server import main

main()
