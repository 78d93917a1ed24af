"""The bottom layer: settings, errors, logging, ids, command-line exit conventions."""
