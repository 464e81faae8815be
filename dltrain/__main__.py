"""`python -m dltrain` runs the `dltrain` command."""

from dltrain.commands.train import console_main

console_main()
