"""`python -m dltrain` runs the `dltrain` command."""

from dltrain.cli import main

main()
