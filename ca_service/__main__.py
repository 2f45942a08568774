"""`python -m ca_service` runs the `ca-service` command line."""

from ca_service.cli import main

main()
