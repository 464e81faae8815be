"""`python -m dltrain` runs the `dltrain` command."""

from dltrain.cli import console_main

console_main()
