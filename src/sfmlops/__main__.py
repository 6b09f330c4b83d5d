"""`python -m sfmlops` runs the CLI (what job runners start)."""

from sfmlops.cli import main

main()
