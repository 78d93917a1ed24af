"""The ``clients`` row of one agent process: registration, heartbeat and control reads."""

from __future__ import annotations

import enum
import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared import __version__
from shared.db.database import Database
from shared.db.queries import Q


class Control(enum.Enum):
    """What the operators want this client to do right now."""

    RUN = "run"
    PAUSE = "pause"
    STOP = "stop"


@dataclass(frozen=True)
class ControlState:
    """The result of one control read."""

    control: Control
    declared_dead: bool = False


def decide(command: str | None, standing: str | None) -> Control:
    """Combine the client's own command with the standing flags that match it.

    Stop wins over pause; a client ``resume`` clears only the client's own pause, so a
    standing pause must be cleared with ``ippctl clients resume --agent ...``.
    """
    flags = set(standing.split(",")) if standing else set()
    if command == "stop" or "stop" in flags:
        return Control.STOP
    if command == "pause" or "pause" in flags:
        return Control.PAUSE
    return Control.RUN


@dataclass
class ClientState:
    """What the heartbeat reports: the mutable side of this process's clients row."""

    status: str = "running"
    current_item: str | None = None
    items_done: int = 0
    items_failed: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: datetime | None = None
    #: The counter values already added to the site-wide totals (metrics_counter).
    flushed: dict[str, int] = field(default_factory=dict)

    def unflushed(self) -> dict[str, int]:
        return {
            k: v - self.flushed.get(k, 0) for k, v in self.counters.items() if v != self.flushed.get(k, 0)
        }

    def params(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "current_item": self.current_item[:255] if self.current_item else None,
            "items_done": self.items_done,
            "items_failed": self.items_failed,
            "counters": json.dumps(self.counters, sort_keys=True) if self.counters else None,
            "last_error": self.last_error[:4000] if self.last_error else None,
            "last_error_at": self.last_error_at,
        }

    def record_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class ClientIdentity:
    """The fixed side of the clients row."""

    client_id: str
    agent: str
    host: str
    pid: int
    config: str
    version: str

    @classmethod
    def fresh(cls, agent: str, config: str) -> ClientIdentity:
        """A new identity: one per process start, never reused."""
        return cls(
            client_id=str(uuid.uuid4()),
            agent=agent,
            host=socket.gethostname(),
            pid=os.getpid(),
            config=config,
            version=__version__,
        )


class ClientRow:
    """Reads and writes of one client's row."""

    def __init__(self, db: Database, identity: ClientIdentity) -> None:
        self.db = db
        self.identity = identity

    async def register(self) -> None:
        i = self.identity
        await self.db.execute(
            Q.register_client,
            client_id=i.client_id,
            agent=i.agent,
            host=i.host,
            pid=i.pid,
            config=i.config,
            version=i.version,
        )

    async def heartbeat(self, state: ClientState) -> bool:
        """Write liveness; False if the row is gone or the sweeper declared us dead."""
        changed = await self.db.execute(Q.heartbeat, client_id=self.identity.client_id, **state.params())
        await self.flush_counters(state)
        return changed == 1

    async def flush_counters(self, state: ClientState) -> None:
        """Add what the counters grew by since the last flush to the site-wide totals
        (``metrics_counter``, named ``<agent>.<counter>``), which outlive client rows."""
        for name, delta in sorted(state.unflushed().items()):
            await self.db.execute(Q.metrics_counter_add, name=f"{self.identity.agent}.{name}", n=delta)
            state.flushed[name] = state.flushed.get(name, 0) + delta

    async def read_control(self) -> ControlState:
        i = self.identity
        row = await self.db.fetch_one(
            Q.read_control, client_id=i.client_id, agent=i.agent, host=i.host, config=i.config
        )
        if row is None or row["status"] == "dead":
            return ControlState(Control.STOP, declared_dead=True)
        return ControlState(decide(row["command"], row["standing"]))

    async def end(self, state: ClientState, status: str) -> None:
        await self.db.execute(
            Q.end_client, client_id=self.identity.client_id, **{**state.params(), "status": status}
        )
        await self.flush_counters(state)
