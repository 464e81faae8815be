"""A run directory: the names of its files, the claim of a live run, and writes a reader never sees half-done."""
