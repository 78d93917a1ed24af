"""PSPS: the table descriptions (VOTable files, one per batch type) and loading configs."""

#: The batch types (REFERENCE 11), kept here so light modules need not read the VOTables.
BATCH_TYPES = ("IN", "P2", "ST", "OB")
