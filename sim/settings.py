"""The stand-ins' own settings: knobs no production process reads.

They come from the same places as the IPP's (:func:`shared.core.settings.load_section`): the
``[stand_ins]`` table of the ``IPP_SETTINGS`` file, then ``IPP_<NAME>`` variables (so
``IPP_ODM_FAIL_SHARE=0.2`` still fails a fifth of the batches). Documented in
docs/configuration.md, "The stand-ins".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.core.errors import SettingsError
from shared.core.settings import Settings, load_section


@dataclass(frozen=True)
class StandIns:
    """The PSPS stand-in: where the DXLayer keeps its copies (empty: <var_dir>/dxlayer), how
    often it polls the DataStore, who may delete a copy, and its test knobs."""

    dxlayer_dir: str = ""
    dxlayer_poll_s: float = 2.0
    # Who may ask the PSPS side to delete a batch's DXLayer copy: these client addresses, or
    # any client that sends odm_token (Authorization: Bearer; the batch cleaner sends it).
    odm_delete_peers: str = "127.0.0.1,::1"
    # Share of batches failed, share of answers that are HTTP 500, a delay before every
    # answer, a delay between merge_worthy and merged.
    odm_fail_share: float = 0.0
    odm_error_share: float = 0.0
    odm_slow_s: float = 0.0
    odm_merge_delay_s: float = 0.0

    def dxlayer_path(self, settings: Settings) -> Path:
        return Path(self.dxlayer_dir or Path(settings.var_dir) / "dxlayer")

    def validate(self) -> None:
        if self.dxlayer_poll_s <= 0:
            raise SettingsError(f"setting dxlayer_poll_s must be > 0, got {self.dxlayer_poll_s!r}")
        for share in ("odm_fail_share", "odm_error_share"):
            if not 0 <= getattr(self, share) <= 1:
                raise SettingsError(
                    f"setting {share} must be a share between 0 and 1, got {getattr(self, share)!r}"
                )
        for delay in ("odm_slow_s", "odm_merge_delay_s"):
            if getattr(self, delay) < 0:
                raise SettingsError(f"setting {delay} must be >= 0, got {getattr(self, delay)!r}")


def load_stand_ins(environ: Mapping[str, str] | None = None, **overrides: Any) -> StandIns:
    knobs = load_section(StandIns, "stand_ins", environ, overrides)
    knobs.validate()
    return knobs
