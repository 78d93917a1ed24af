"""The agent runtime: the loop every agent runs in, and the mechanisms it owns.

- :mod:`shared.runtime.agent`: the loop that calls an agent's ``run_once`` and obeys control.
- :mod:`shared.runtime.clients`: the ``clients`` row (registration, heartbeat, control).
- :mod:`shared.runtime.claims`: claiming rows with SKIP LOCKED, finishing them, handing back.
- :mod:`shared.runtime.sweeper`: declaring silent clients dead and releasing their claims.
"""
