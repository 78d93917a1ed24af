"""The loop every agent runs in.

An agent is a module with ``NAME`` and ``async def run_once(ctx) -> int`` (the number of items
it handled; 0 means nothing is pending). Optionally ``add_arguments(parser)`` for its own
command-line options, ``lifespan(ctx)`` (an async context manager pairing the setup of its
resources with their teardown), ``BACKGROUND_SWEEP = False`` to not run the sweeper task and
``CLAIMABLES`` for claimable tables of its own beyond those the runner is given (the IPP's,
:mod:`shared.claimables`).

:class:`AgentRunner` owns everything else: the clients row, the heartbeat and sweeper tasks
(named and watched: if one dies the agent stops, loudly), pause/resume/stop from the
database, SIGTERM/SIGINT (which only request a stop), the drain with its deadline, handing
back unfinished claims, and ``--once``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

from shared.core.errors import ClaimLost, DbError, IppError
from shared.core.log import bind, get_logger
from shared.core.settings import Settings
from shared.db.columns import TextLimits
from shared.db.database import Database, Row, backoff_s
from shared.db.roles import Databases
from shared.db.schema import PROCESSING
from shared.runtime.claims import Claimer, ClaimSpec
from shared.runtime.clients import ClientIdentity, ClientRow, ClientState, Control
from shared.runtime.stopsignals import STOP
from shared.runtime.sweeper import sweep

RunOnce = Callable[["AgentContext"], Awaitable[int]]
Failure = Callable[[str], Awaitable[None]]
Lifespan = Callable[["AgentContext"], AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class AgentSpec:
    """What the runtime needs to know about one agent."""

    name: str
    run_once: RunOnce
    description: str = ""
    lifespan: Lifespan | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    background_sweep: bool = True
    claimables: tuple[ClaimSpec, ...] = ()
    #: works on PSPS loading configs: started without --config it says so and stops
    #: (seed 003's programs ask for one); every config only with --config all
    per_config: bool = False
    #: the role of the database it registers in and keeps its tables in (shared.db.roles):
    #: the loading side's agents say ``DATABASE = "ipptopsps"``
    database: str = PROCESSING
    #: a processing-side agent that also works on the ippToPsps database (the console)
    opens_ipptopsps: bool = False

    @classmethod
    def from_module(cls, module: ModuleType) -> AgentSpec:
        doc = (module.__doc__ or "").strip().splitlines()
        return cls(
            name=module.NAME,
            run_once=module.run_once,
            description=doc[0] if doc else "",
            lifespan=getattr(module, "lifespan", None),
            add_arguments=getattr(module, "add_arguments", None),
            background_sweep=getattr(module, "BACKGROUND_SWEEP", True),
            claimables=tuple(getattr(module, "CLAIMABLES", ())),
            per_config=getattr(module, "PER_CONFIG", False),
            database=getattr(module, "DATABASE", PROCESSING),
            opens_ipptopsps=getattr(module, "OPENS_IPPTOPSPS", False),
        )


@dataclass(frozen=True)
class ItemEvents:
    """The log events of one agent's items: a claim lost meanwhile, and a failure."""

    claim_lost: str
    failed: str


class AgentContext:
    """What ``run_once`` gets: the database, settings, claims, and progress reporting.
    ``db`` is the agent's own database (its clients row, flags, claims and tables); ``dbs``
    holds the others by role (the loading side's read-only reads of the processing database
    and its DataStore publication)."""

    def __init__(self, runner: AgentRunner, args: argparse.Namespace) -> None:
        self._runner = runner
        self.args = args
        self.settings: Settings = runner.settings
        self.db: Database = runner.db
        self.dbs: Databases = runner.dbs
        self.identity: ClientIdentity = runner.identity
        self.claimer = Claimer(runner.db, runner.identity.client_id)
        self.claimables: tuple[ClaimSpec, ...] = runner.claimables
        self.log = get_logger(runner.spec.name)
        self.resources: dict[str, Any] = {}
        #: Lengths of the text columns (notes), read when the agent starts.
        self.text = TextLimits()

    @property
    def client_id(self) -> str:
        return self.identity.client_id

    @property
    def config(self) -> str:
        return self.identity.config

    def keep_going(self) -> bool:
        """False once the agent should take no more items (stop, pause, lost heartbeat)."""
        return self._runner.may_take_work()

    def begin_item(self, item: str) -> None:
        """Report the item being worked on (shown by ``ippctl clients list``)."""
        self._runner.state.current_item = item

    def item_done(self) -> None:
        self._runner.state.items_done += 1
        self._runner.state.current_item = None

    def item_failed(self, reason: str) -> None:
        state = self._runner.state
        state.items_failed += 1
        state.current_item = None
        state.record_error(reason)

    async def claimed(self, spec: ClaimSpec, *, limit: int = 1, **params: Any) -> AsyncIterator[list[Row]]:
        """Claim rows ``limit`` at a time until none is pending or the agent should take no
        more (stop, pause, lost heartbeat); yields each claimed batch."""
        while self.keep_going():
            rows = await self.claimer.claim(spec, limit=limit, **params)
            if not rows:
                return
            yield rows

    @contextlib.asynccontextmanager
    async def working_on(
        self,
        item: str,
        events: ItemEvents,
        fail: Failure,
        *,
        failures: tuple[type[BaseException], ...] = (IppError,),
        log: Any = None,
    ) -> AsyncIterator[None]:
        """One item under the agents' common policy: a claim lost meanwhile (another client
        has the item now) is a warning and a failed item; a database error propagates (the
        runtime retries, and hands the claim back on a stop); one of ``failures`` is
        recorded on the item with ``fail(reason)`` and logged; otherwise the item is done."""
        log = log or self.log
        self.begin_item(item)
        try:
            yield
        except ClaimLost as exc:
            log.warning(
                events.claim_lost,
                error=str(exc),
                action="the item was released meanwhile; its new owner does it",
            )
            self.item_failed(str(exc))
        except DbError:
            raise
        except failures as exc:
            reason = str(exc)
            await fail(reason)
            log.error(events.failed, reason=reason)
            self.item_failed(reason)
        else:
            self.item_done()

    def finish(self, reason: str, *, exit_code: int = 0) -> None:
        """The agent's work is complete (``loader --config C init``): it exits cleanly, as
        after a stop, once this pass returns; with ``exit_code`` (1: it failed)."""
        if exit_code:
            self._runner.exit_code = exit_code
        self._runner.request_stop(reason)

    def count(self, name: str, n: int = 1) -> None:
        """Add to an agent-specific counter reported in the clients row."""
        counters = self._runner.state.counters
        counters[name] = counters.get(name, 0) + n


@contextlib.asynccontextmanager
async def _no_lifespan(ctx: AgentContext) -> AsyncIterator[None]:
    yield


class AgentRunner:
    """Runs one agent process from registration to a clean exit."""

    def __init__(
        self,
        spec: AgentSpec,
        settings: Settings,
        db: Database,
        identity: ClientIdentity,
        *,
        once: bool = False,
        every_s: float | None = None,
        args: argparse.Namespace | None = None,
        claimables: Sequence[ClaimSpec] = (),
        dbs: Databases | None = None,
    ) -> None:
        self.spec = spec
        #: ``--every HOURS``: a whole pass, then the next one that long after it began.
        self.every_s = every_s
        self.pass_started: float | None = None
        self.next_pass_at = 0.0
        #: The tables whose dead clients' claims this process's sweeps release.
        self.claimables = tuple({s.table: s for s in (*claimables, *spec.claimables)}.values())
        self.settings = settings
        self.db = db
        #: every database by role (one pool for all when the site has one database)
        self.dbs = dbs or Databases.single(db)
        self.identity = identity
        self.once = once
        self.row = ClientRow(db, identity)
        # The heartbeat gets a short reconnect budget so it never blocks past its interval.
        quick = replace(
            settings,
            db_reconnect_max_s=settings.heartbeat_interval_s,
            db_statement_timeout_s=min(settings.db_statement_timeout_s, settings.heartbeat_grace_s),
        )
        self.heartbeat_row = ClientRow(db.with_settings(quick), identity)
        self.state = ClientState()
        self.control = Control.RUN
        self.stop_requested = asyncio.Event()
        self.force_stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.beat_now = asyncio.Event()
        self.stop_reason = ""
        self.exit_code = 0
        self.startup_error: str | None = None
        self.heartbeat_ok_at = time.monotonic()
        self.heartbeat_lost = False
        self.declared_dead = False
        self.log = get_logger("runtime")
        self.ctx = AgentContext(self, args or argparse.Namespace())

    # -- requests from signals, control and background tasks ---------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask the loop to drain and exit. Safe to call from a signal handler: sets flags only."""
        if self.stop_requested.is_set():
            if reason.startswith("SIG"):
                self.force_stop.set()
            return
        self.stop_reason = reason
        self.stop_requested.set()
        self.wake.set()

    def may_take_work(self) -> bool:
        return not self.stop_requested.is_set() and self.control is Control.RUN and self.heartbeat_healthy()

    def heartbeat_healthy(self) -> bool:
        return time.monotonic() - self.heartbeat_ok_at <= self.settings.heartbeat_grace_s

    # -- the whole life --------------------------------------------------------------------

    async def run(self) -> int:
        """Register, work until stopped, hand back, mark the row ended; returns the exit code."""
        with STOP.delivered_by(asyncio.get_running_loop()):
            await self.row.register()
            bind(client_id=self.identity.client_id)
            self.log.info("agent_started", once=self.once, version=self.identity.version)
            lifespan = self.spec.lifespan or _no_lifespan
            try:
                self.ctx.text = await TextLimits.read(self.db)
                with STOP.listening(self._on_signal):
                    async with lifespan(self.ctx):
                        await self._run_tasks()
            except IppError as exc:  # a resource the agent needs could not be set up
                self._failed_to_start(exc)
            finally:
                await self._finish()
        return self.exit_code

    def _failed_to_start(self, exc: IppError) -> None:
        self.startup_error = str(exc)
        self.exit_code = 1
        self.stop_reason = str(exc)
        self.state.record_error(str(exc))
        self.log.error("startup_failed", error=str(exc))

    async def _run_tasks(self) -> None:
        if self.spec.background_sweep:
            # Release what dead clients still hold before looking for work, so a restarted
            # (or --once) agent finds it; the sweeper task then runs every sweep_interval_s.
            await self._sweep_once()
        background = {asyncio.create_task(self._heartbeat_loop(), name="heartbeat")}
        if self.spec.background_sweep:
            background.add(asyncio.create_task(self._sweep_loop(), name="sweeper"))
        work = asyncio.create_task(self._work_loop(), name="work")
        try:
            await self._supervise(work, background)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    async def _supervise(self, work: asyncio.Task[None], background: set[asyncio.Task[None]]) -> None:
        stop_wait = asyncio.create_task(self.stop_requested.wait(), name="stop-wait")
        try:
            done, _ = await asyncio.wait({work, stop_wait, *background}, return_when=asyncio.FIRST_COMPLETED)
            for task in background & done:
                self._background_died(task)
            if not work.done():
                await self._drain(work)
        finally:
            stop_wait.cancel()
        if not work.cancelled() and work.exception() is not None:
            exc = work.exception()
            self.exit_code = 1
            self.state.record_error(f"{type(exc).__name__}: {exc}")
            self.log.error("agent_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)

    async def _drain(self, work: asyncio.Task[None]) -> None:
        """Let the current item finish within the drain deadline, then cancel it."""
        self.state.status = "stopping"
        self.log.info("drain_started", reason=self.stop_reason, deadline_s=self.settings.drain_timeout_s)
        force = asyncio.create_task(self.force_stop.wait(), name="force-wait")
        try:
            await asyncio.wait(
                {work, force}, timeout=self.settings.drain_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            force.cancel()
        if not work.done():
            self.log.warning(
                "drain_deadline_passed", current_item=self.state.current_item, forced=self.force_stop.is_set()
            )
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work

    def _background_died(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        error = f"{type(exc).__name__}: {exc}" if exc else "returned"
        self.log.critical("background_task_died", task=task.get_name(), error=error, exc_info=exc)
        self.state.record_error(f"{task.get_name()} task died: {error}")
        self.exit_code = 1
        self.request_stop(f"{task.get_name()} task died")

    async def _finish(self) -> None:
        """Hand back what we still hold and mark our row ended."""
        released = 0
        try:
            released = await self.ctx.claimer.release_all()
        except DbError as exc:
            self.log.error("handback_failed", error=str(exc), held=len(self.ctx.claimer.held))
        status = "dead" if self.declared_dead else "stopped"
        if not self.declared_dead:
            try:
                await self.row.end(self.state, status)
            except DbError as exc:
                self.log.error("end_client_failed", error=str(exc))
        self.log.info(
            "agent_stopped",
            reason=self.stop_reason or "done",
            exit_code=self.exit_code,
            claims_handed_back=released,
            items_done=self.state.items_done,
            items_failed=self.state.items_failed,
        )

    # -- the work loop ----------------------------------------------------------------------

    async def _work_loop(self) -> None:
        failures = 0
        while not self.stop_requested.is_set():
            control = await self._read_control()
            if control is Control.STOP:
                self.request_stop("stop requested in the database")
                break
            if not self.heartbeat_healthy():
                await self._idle(self.settings.heartbeat_interval_s)
                continue
            if control is Control.PAUSE:
                self._set_status("paused")
                await self._idle(self.settings.poll_interval_s)
                continue
            self._set_status("running")
            if self.every_s and time.monotonic() < self.next_pass_at:
                await self._idle(self.next_pass_at - time.monotonic())
                continue
            if self.pass_started is None:
                self.pass_started = time.monotonic()
                if self.every_s:
                    self.state.current_item = None
            try:
                handled = await self.spec.run_once(self.ctx)
            except DbError as exc:
                if self.once:
                    raise
                failures += 1
                delay = backoff_s(failures, 1.0, self.settings.error_backoff_max_s)
                self.state.record_error(str(exc))
                self.log.warning("iteration_failed", error=str(exc), retry_in_s=round(delay, 2))
                await self._idle(delay)
                continue
            failures = 0
            if handled == 0:
                if self.once:
                    self.request_stop("--once: nothing pending")
                    break
                if self.every_s:  # the pass is complete: the next one begins every_s after it
                    self._pass_complete()
                    continue
                self.pass_started = None
                await self._idle(self.settings.poll_interval_s)

    def _pass_complete(self) -> None:
        """``--every``: note when the next pass begins (shown as the current item meanwhile)."""
        assert self.every_s
        self.next_pass_at = (self.pass_started or time.monotonic()) + self.every_s
        self.pass_started = None
        wait_s = max(0.0, self.next_pass_at - time.monotonic())
        at = datetime.now(UTC) + timedelta(seconds=wait_s)
        self.state.current_item = f"next pass at {at:%Y-%m-%d %H:%M:%S} UTC"
        self.log.info("pass_complete", next_pass_in_s=round(wait_s))
        self.beat_now.set()

    async def _read_control(self) -> Control:
        """Fresh (autocommit) read of the client command and standing flags."""
        try:
            state = await self.heartbeat_row.read_control()
        except DbError as exc:
            self.log.warning("control_read_failed", error=str(exc))
            return self.control
        if state.declared_dead:
            self._declared_dead()
        self._apply_control(state.control)
        return self.control

    def _apply_control(self, control: Control) -> None:
        if control is not self.control:
            self.log.info("control_changed", control=control.value, was=self.control.value)
            self.control = control
            self.wake.set()

    def _set_status(self, status: str) -> None:
        if self.state.status != status:
            self.log.info("status_changed", status=status, was=self.state.status)
            self.state.status = status
            self.beat_now.set()  # show the new status at once, not at the next beat

    async def _idle(self, seconds: float) -> None:
        """Wait up to ``seconds``, waking early on stop or a control change."""
        self.wake.clear()
        if self.stop_requested.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()

    def _declared_dead(self) -> None:
        if not self.declared_dead:
            self.declared_dead = True
            self.exit_code = 1
            self.log.error(
                "client_declared_dead",
                reason="the sweeper released this client's claims; exiting so a fresh client can start",
            )
            self.request_stop("declared dead by the sweeper")

    # -- background tasks -------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Write the heartbeat and read control every ``heartbeat_interval_s``."""
        interval = self.settings.heartbeat_interval_s
        while True:
            try:
                alive = await self.heartbeat_row.heartbeat(self.state)
                if not alive:
                    self._declared_dead()
                    await asyncio.Future()  # nothing more to do until shutdown cancels us
                self.heartbeat_ok_at = time.monotonic()
                if self.heartbeat_lost:
                    self.heartbeat_lost = False
                    self.log.info("heartbeat_restored")
                    self.wake.set()
                state = await self.heartbeat_row.read_control()
                if not self.stop_requested.is_set():
                    self._apply_control(state.control)
            except DbError as exc:
                self.log.warning("heartbeat_failed", error=str(exc))
                if not self.heartbeat_healthy() and not self.heartbeat_lost:
                    self.heartbeat_lost = True
                    self.log.error(
                        "heartbeat_lost",
                        grace_s=self.settings.heartbeat_grace_s,
                        action="taking no work until the heartbeat is written again",
                    )
            self.beat_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self.beat_now.wait()

    async def _sweep_once(self) -> None:
        try:
            result = await sweep(self.db, self.settings, self.claimables)
        except DbError as exc:
            self.log.warning("sweep_failed", error=str(exc))
            return
        if result.clients_dead or result.claims_released or result.clients_pruned:
            self.log.info(
                "sweep",
                clients_dead=result.clients_dead,
                claims_released=result.claims_released,
                clients_pruned=result.clients_pruned,
            )

    async def _sweep_loop(self) -> None:
        """Run the sweeper every ``sweep_interval_s`` (jittered so agents spread out)."""
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s * random.uniform(0.9, 1.1))
            await self._sweep_once()

    # -- signals -----------------------------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        self.log.info(
            "signal_received",
            signal=sig.name,
            action="hand back now" if self.stop_requested.is_set() else "drain",
        )
        self.request_stop(sig.name)
