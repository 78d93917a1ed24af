"""Which agents exist: :data:`BUILTIN` maps agent names to their modules; the
``extra_agents`` setting adds a site's own (``name=package.module``)."""

from __future__ import annotations

import importlib

from shared.core.errors import SettingsError, UnknownAgent
from shared.core.settings import Settings
from shared.runtime.agent import AgentSpec

#: Built-in agents, by name.
BUILTIN: dict[str, str] = {
    "batch_cleaner": "agents.batch_cleaner",
    "cleanup": "agents.cleanup",
    "console": "agents.console",
    "dist_server": "agents.dist_server",
    "dist_client": "agents.dist_client",
    "loader": "agents.loader",
    "metrics": "agents.metrics",
    "odm_poller": "agents.odm_poller",
    "sweeper": "agents.sweeper",
    "update": "agents.update",
}


def agent_modules(settings: Settings) -> dict[str, str]:
    """Built-in agents plus the ``extra_agents`` setting."""
    modules = dict(BUILTIN)
    for entry in filter(None, (e.strip() for e in settings.extra_agents.split(","))):
        name, sep, module = entry.partition("=")
        if not sep or not name.strip() or not module.strip():
            raise SettingsError(f"setting extra_agents: {entry!r} is not name=package.module")
        modules[name.strip()] = module.strip()
    return modules


def load_agent(name: str, settings: Settings) -> AgentSpec:
    """Import the agent module for ``name``; UnknownAgent lists the known names."""
    modules = agent_modules(settings)
    if name not in modules:
        known = ", ".join(sorted(modules)) or "none"
        raise UnknownAgent(f"unknown agent {name!r} (known agents: {known})")
    module = importlib.import_module(modules[name])
    spec = AgentSpec.from_module(module)
    if spec.name != name:
        raise UnknownAgent(f"module {modules[name]} declares agent {spec.name!r}, not {name!r}")
    return spec
