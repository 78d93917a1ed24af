"""The PSPS stand-in: a DXLayer that loads and merges published batches into a ``psps``
database, and the ODM web service that reports their status (``ipp-sim psps``)."""
