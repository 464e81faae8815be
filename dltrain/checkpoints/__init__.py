"""Checkpoints: read without running code and checked, and written atomically."""
