"""A search's worker process: ``python -m workbench.studies.search JOB.json``, started by
:func:`workbench.studies.search.workers.run_workers`; SIGTERM stops it like Ctrl-C."""

import signal
import sys

from workbench.studies.search.workers import worker_main

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    raise SystemExit(worker_main(sys.argv[1]))
