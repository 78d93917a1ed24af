"""``ipp-agent NAME [--config CONFIG|all] [--once]``: run one agent under the runtime.

The entry point catches stop signals before it imports anything heavy (the agent modules pull
in numpy and astropy, most of a second of CPU): a SIGTERM or SIGINT at any moment of start-up
then ends in a logged, clean exit 0 (:mod:`shared.runtime.stopsignals`).
"""

from __future__ import annotations

import sys

from shared.core.cli import restrict_umask
from shared.runtime.stopsignals import STOP


def main(argv: list[str] | None = None) -> int:
    STOP.catch()
    restrict_umask()
    from agents.run import run_agent

    return run_agent(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
