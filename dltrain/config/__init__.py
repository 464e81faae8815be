"""The config: composed by Hydra, its schema and checks of keys and types, what a stored config may name, the
config a resume continues with, and building from it."""
