"""Nebulous-style storage: neb:// keys, volumes, objects and their file instances."""
