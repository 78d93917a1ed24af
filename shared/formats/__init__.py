"""File formats the IPP reads and writes: mdc metadata, FITS catalogs, DVO databases."""
