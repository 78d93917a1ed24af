"""Talking to PSPS's ODM web service: a batch's status, and deleting the DXLayer's copy.

The answers are checked strictly: anything but a JSON object naming this batch with a known
status (and, for a failure, the stage it failed at) is an :class:`OdmError` naming the batch,
so nonsense is never recorded as progress.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from shared.core.errors import IppError

STATUSES = ("loaded", "merge_worthy", "merged", "failed")
#: Where a failed batch failed, as the ODM names it -> the batch column it fails.
FAILED_STAGES = {"load": "loaded_to_odm", "merge_worthy": "merge_worthy", "merge": "merged"}


class OdmError(IppError):
    """The ODM could not be asked, or answered something that is not a status."""


@dataclass(frozen=True)
class OdmStatus:
    status: str
    stage: str | None = None
    reason: str | None = None

    @functools.cached_property
    def _stages(self) -> dict[str, str]:
        return self._settled()

    def stages(self) -> dict[str, str]:
        """The batch columns this status settles: {loaded/worthy/merged: state} (worked out
        once per answer: the poller asks several times for each of thousands)."""
        return self._stages

    def _settled(self) -> dict[str, str]:
        if self.status == "failed":
            failed = FAILED_STAGES[str(self.stage)]
            order = ["loaded_to_odm", "merge_worthy", "merged"]
            at = order.index(failed)
            states = {c: "succeeded" for c in order[:at]} | {failed: "failed"}
            return {c: states.get(c, "pending") for c in order}
        reached = {"loaded": 1, "merge_worthy": 2, "merged": 3}[self.status]
        return {
            c: ("succeeded" if i < reached else "pending")
            for i, c in enumerate(("loaded_to_odm", "merge_worthy", "merged"))
        }


def parse_status(name: str, http_status: int, text: str) -> OdmStatus | None:
    """The ODM's answer about ``name``: a status, None for a batch it does not know (404),
    OdmError for anything else."""
    if http_status == 404:
        return None
    if http_status != 200:
        raise OdmError(f"batch {name}: the ODM answered HTTP {http_status}: {text[:200].strip()}")
    try:
        body: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OdmError(
            f"batch {name}: the ODM answered with something that is not JSON ({exc.msg}): {text[:120]!r}"
        ) from None
    if not isinstance(body, dict):
        raise OdmError(f"batch {name}: the ODM's answer is not a JSON object: {text[:120]!r}")
    if body.get("batch") != name:
        raise OdmError(f"batch {name}: the ODM answered about {body.get('batch')!r}")
    status = body.get("status")
    if status not in STATUSES:
        raise OdmError(f"batch {name}: unknown ODM status {status!r} (known: {', '.join(STATUSES)})")
    if status != "failed":
        return OdmStatus(status)
    stage, reason = body.get("stage"), body.get("reason")
    if stage not in FAILED_STAGES:
        raise OdmError(f"batch {name}: failed at unknown stage {stage!r} (known: {', '.join(FAILED_STAGES)})")
    return OdmStatus("failed", stage, str(reason or "no reason given")[:900])


async def batch_status(session: aiohttp.ClientSession, base: str, name: str) -> OdmStatus | None:
    url = f"{base}/odm/batch/{name}"
    try:
        async with session.get(url) as resp:
            text = await resp.text(errors="replace")
            return parse_status(name, resp.status, text)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OdmError(f"batch {name}: GET {url}: {type(exc).__name__}: {exc}") from None


async def delete_dxlayer_copy(session: aiohttp.ClientSession, base: str, name: str, token: str = "") -> bool:
    """Ask the DXLayer to delete its copy; False when it has none (404). ``token`` is sent
    as a bearer token when set (the PSPS side lets only its peers delete)."""
    url = f"{base}/dxlayer/batch/{name}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.delete(url, headers=headers) as resp:
            text = await resp.text(errors="replace")
            if resp.status == 404:
                return False
            if resp.status != 200:
                raise OdmError(f"batch {name}: DELETE {url}: HTTP {resp.status}: {text[:200].strip()}")
            return True
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OdmError(f"batch {name}: DELETE {url}: {type(exc).__name__}: {exc}") from None


def session(timeout_s: float) -> aiohttp.ClientSession:
    """An HTTP session whose requests give up after ``timeout_s`` (a hung ODM)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
