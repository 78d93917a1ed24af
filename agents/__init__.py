"""The agents: one module each, exposing ``NAME`` and ``run_once(ctx)``.

:mod:`agents.registry` says which exist; ``ipp-agent NAME`` (:mod:`agents.__main__`) runs one
under the shared runtime. This file imports nothing, so that the entry point can catch stop
signals before the heavy imports (see :mod:`shared.runtime.stopsignals`).
"""
