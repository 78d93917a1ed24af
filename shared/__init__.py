"""The runtime and everything the IPP agents share.

Not to be confused with the ``../shared`` folder that sits beside a checkout: this package
holds the database layer, settings, logging, the agent runtime, storage and file formats.
"""

from __future__ import annotations

__version__ = "0.1.0"
