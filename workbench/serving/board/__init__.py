"""The board: one MLflow tracking server on PostgreSQL, and the Optuna storage beside it, that a
lab or a class shares (``workbench board``; docs/board.md).

:mod:`~workbench.serving.board.database` (URLs without passwords, credentials, the statements the
board runs), :mod:`~workbench.serving.board.local_postgres` (a private server in a data folder),
:mod:`~workbench.serving.board.serve` (the command).
"""
