"""The console scripts, one module each (dltrain, dltrain-eval, -predict, -export, -serve, -runs), and their shared part."""
