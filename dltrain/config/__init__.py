"""The config: composed by Hydra, its schema and checks of keys and types, what a stored config may name, building from it."""
