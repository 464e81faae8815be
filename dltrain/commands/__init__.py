"""The console scripts, one module each (dltrain and dltrain validate, dltrain-eval, -predict, -export, -serve,
-runs), and their shared part."""
