"""PSPS: the table descriptions (VOTable files, one per batch type) and loading configs."""
