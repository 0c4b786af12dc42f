"""`workbench ui`, `lab` and `board`: the servers the workbench manages in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.spec.errors import MissingPackage


def cmd_ui(args) -> int:
    from workbench.serving.servers import mlflow_server, serve_in_foreground
    from workbench.spec import paths

    uri = paths.tracking_uri()
    root = paths.artifact_root(uri)
    server = mlflow_server(
        "MLflow UI",
        uri,
        host=args.host,
        port=args.port,
        options=["--default-artifact-root", root] if root else [],
    )
    server.check_port()
    print(f"starting the MLflow UI for {uri} ...", flush=True)

    def ready(server):
        chosen = f" (--port 0: free port {server.port})" if args.port == 0 else ""
        print(
            f"MLflow UI on {server.url}{chosen}; Ctrl-C stops it (server log: {server.log_path})",
            flush=True,
        )

    code = serve_in_foreground(server, on_ready=ready)
    if code == 0:
        print("MLflow UI stopped", flush=True)
    return code


def cmd_lab(args) -> int:
    import importlib.util
    import secrets

    from workbench.serving.servers import jupyterlab_server, serve_in_foreground
    from workbench.spec import paths

    root = Path(args.dir) if args.dir else (paths.checkout_root() or Path.cwd()) / "notebooks"
    if not root.is_dir():
        print(f"error: no folder {root}; pass the notebooks' folder with --dir", file=sys.stderr)
        return 2
    if importlib.util.find_spec("jupyterlab") is None:
        raise MissingPackage(
            "JupyterLab is not installed in this environment; `scripts/setup.sh ui` "
            "installs it with the notebook packages"
        )
    token = secrets.token_hex(24)  # a fresh token each start; only the printed URL carries it
    # No news feed and no news pop-up over the cells (servers.LAB_DISABLED_PLUGINS).
    server = jupyterlab_server(root, token=token, host=args.host, port=args.port)
    server.check_port()
    print(f"starting JupyterLab on {root} ...", flush=True)

    def ready(server):
        print(
            f"JupyterLab on {server.url}/lab?token={token}\nCtrl-C stops it (server log: "
            f"{server.log_path})",
            flush=True,
        )

    code = serve_in_foreground(server, on_ready=ready)
    if code == 0:
        print("JupyterLab stopped", flush=True)
    return code


def cmd_board(args) -> int:
    from workbench.serving.board.serve import run_board

    return run_board(args)
