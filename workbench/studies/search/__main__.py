"""A search's worker process: ``python -m workbench.studies.search JOB.json``, started by
:func:`workbench.studies.search.workers.run_workers`; SIGTERM stops it like Ctrl-C."""

import sys

from workbench.running.signals import sigterm_raises_interrupt_for_good
from workbench.studies.search.workers import worker_main

if __name__ == "__main__":
    sigterm_raises_interrupt_for_good()
    raise SystemExit(worker_main(sys.argv[1]))
