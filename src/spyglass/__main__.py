"""`python -m spyglass` runs the CLI."""

from spyglass.cli import main

main()
