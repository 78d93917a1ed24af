"""``ippctl psps queue CONFIG``: what a loading config still has to load, as items in stripes.

The config's sky is cut into stripes of RA (``box_size_deg`` wide) and each stripe into boxes
of declination; loaders reserve a stripe and work it box by box. Items: P2 = camera runs
merged into the config's DVO database (addRun.dvodb = dvo_label), ST = full stack runs, OB =
DVO regions with catalog files; each inside the config's sky limits. Queuing is idempotent:
an item already queued is left as it is; failed items are retried up to ``psps_max_attempts``;
items whose batch was published before the config's epoch are loaded again. The candidates
are read from the processing database (read-only when the ippToPsps database is separate);
stripes and items are written in the ippToPsps database.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from shared.db.database import Database, Tx
from shared.db.queries import Q
from shared.db.roles import Databases
from shared.formats.dvo import DvoDatabase, DvoError
from shared.psps import configs
from shared.psps.configs import LoadingConfig


def _place(cfg: LoadingConfig, ra: float, dec: float) -> tuple[int, int]:
    box = float(cfg.box_size_deg)
    return (math.floor((ra - cfg.min_ra) / box), math.floor((dec - cfg.min_dec) / box))


async def _candidates(db: Database, cfg: LoadingConfig, kind: str) -> list[tuple[int, float, float]]:
    limits = {"ra_min": cfg.min_ra, "ra_max": cfg.max_ra, "dec_min": cfg.min_dec, "dec_max": cfg.max_dec}
    if kind == "P2":
        rows = await db.fetch_all(Q.psps_p2_candidates, dvodb=cfg.dvo_label, **limits)
        found = [(int(r["item_id"]), float(r["ra"]), float(r["decl"])) for r in rows]
        return found[:1] if cfg.test_mode else found
    if kind == "ST":
        rows = await db.fetch_all(Q.psps_st_candidates, dvodb=cfg.dvo_label, **limits)
        return [(int(r["item_id"]), float(r["ra"]), float(r["decl"])) for r in rows]
    if kind == "OB":
        if not cfg.dvo_location:
            return []
        try:
            regions = DvoDatabase(Path(cfg.dvo_location)).regions()
        except DvoError:
            return []
        out = []
        for r in regions:
            ra, dec = (r.r_min + r.r_max) / 2, (r.d_min + r.d_max) / 2
            if limits["ra_min"] <= ra < limits["ra_max"] and limits["dec_min"] <= dec < limits["dec_max"]:
                out.append((r.index, ra, dec))
        return out
    return []


#: Items added per multi-row INSERT (a survey of 10^5 exposures is 100 statements, not 10^5).
ADD_CHUNK = 1000


async def _add_items(
    db: Database, cfg: LoadingConfig, name: str, kind: str, found: list[tuple[int, float, float]]
) -> int:
    """Queue candidates not queued yet (INSERT IGNORE); returns how many were new."""
    rows = []
    for item_id, ra, dec in found:
        stripe, box_no = _place(cfg, ra, dec)
        rows.append(
            {
                "config": name,
                "type": kind,
                "item_id": item_id,
                "stripe": stripe,
                "box": box_no,
                "ra": ra,
                "decl": dec,
            }
        )

    async def insert(tx: Tx) -> int:
        return await tx.execute_many(Q.psps_item_add, rows)

    return await db.transaction(insert, name="psps_items_add")


async def queue(dbs: Databases, name: str, max_attempts: int) -> Counter[str]:
    """Queue the config's stripes and items; returns how many items were added per type."""
    db = dbs.ipptopsps
    cfg = await configs.load(db, name)
    box = float(cfg.box_size_deg)
    stripes = max(1, math.ceil((cfg.max_ra - cfg.min_ra) / box))
    for i in range(stripes):
        await db.execute(
            Q.psps_stripe_add,
            config=name,
            stripe=i,
            ra_min=cfg.min_ra + i * box,
            ra_max=min(cfg.min_ra + (i + 1) * box, cfg.max_ra),
        )
    added: Counter[str] = Counter()
    for kind in str(cfg.batch_types).split(","):
        found = await _candidates(dbs.reads, cfg, kind)
        for start in range(0, len(found), ADD_CHUNK):
            added[kind] += await _add_items(db, cfg, name, kind, found[start : start + ADD_CHUNK])
    added["retried"] += await db.execute(Q.psps_items_retry, config=name, max_attempts=max_attempts)
    added["reloaded"] += await db.execute(Q.psps_items_reload, config=name, epoch=cfg.epoch)
    return added


async def queue_and_say(dbs: Databases, name: str, max_attempts: int) -> str:
    """Queue the config's items and say what was added and what the queue holds (the line
    ``ippctl psps queue`` prints and the console shows)."""
    added = await queue(dbs, name, max_attempts)
    counts = await dbs.ipptopsps.fetch_all(Q.psps_queue_counts, config=name)
    news = ", ".join(f"{k} {v}" for k, v in sorted(added.items()) if v)
    items = ", ".join(f"{r['type']} {r['state']} {r['n']}" for r in counts) or "none"
    return f"{name}: queued {news or 'nothing new'}; items: {items}"
