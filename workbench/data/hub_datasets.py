"""Datasets through the ``datasets`` library: a folder it wrote or reads, or a Hugging Face
dataset name (reached only when a name looks like one, and never retried when offline)."""

from __future__ import annotations

import os
from pathlib import Path

from workbench.data.records import (
    ACCEPTED_SOURCES,
    AnyRow,
    Record,
    Table,
    detect_format,
    rows_from_table,
    shortened,
)
from workbench.spec.errors import DataError


def load_with_datasets(
    source: str, path: Path, split: str, max_rows: int | None, *, local: bool
) -> list[AnyRow]:
    try:
        import datasets
    except ImportError:
        raise DataError(
            "needs the 'datasets' package to load a directory or a dataset name; install "
            "it with: pip install 'finetune-workbench[datasets]'",
            source=source,
        ) from None

    if not local:
        _check_hub_reachable(source)
    saved = local and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())
    label = source
    try:
        if saved:
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(
                        f"has no split {split!r}; its splits are {', '.join(map(repr, loaded))}",
                        source=source,
                    )
                dataset = loaded[split]
                label = f"{source} (split '{split}')"
            else:
                dataset = loaded
        else:
            dataset = datasets.load_dataset(str(path) if local else source, split=split)
            label = f"{source} (split '{split}')"
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure inside datasets is a bad source
        message = shortened(str(exc).strip().splitlines()[0] if str(exc).strip() else "", 300)
        if "Unknown split" in str(exc):
            raise DataError(f"has no split {split!r}: {message}", source=source) from None
        if not local and _hub_offline():
            raise DataError(
                "cannot be loaded: it is not in the local datasets cache and the hub is off "
                "(HF_HUB_OFFLINE is set); unset HF_HUB_OFFLINE on a machine that reaches the "
                f"hub, or pass a local file. A data source is {ACCEPTED_SOURCES}",
                source=source,
            ) from None
        if local:
            raise DataError(
                f"is a directory that datasets cannot load ({type(exc).__name__}: {message}); "
                f"it should hold .jsonl/.json/.csv/.parquet files or be written by "
                f"save_to_disk (pass a single file instead to have each row checked)",
                source=source,
            ) from None
        raise DataError(
            f"is not an existing file or directory and cannot be loaded as a Hugging Face "
            f"dataset ({type(exc).__name__}: {message}); a data source is {ACCEPTED_SOURCES}",
            source=source,
        ) from None

    try:
        columns = list(dataset.column_names)
        fmt = detect_format(columns, source=label)
        if max_rows is not None and len(dataset) > max_rows:
            dataset = dataset.select(range(max_rows))
        dataset = dataset.select_columns([c for c in (*fmt.columns, *fmt.optional) if c in columns])
        records = [Record(i, values) for i, values in enumerate(dataset, start=1)]
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoding errors from datasets/pyarrow
        raise DataError(
            f"cannot be read ({type(exc).__name__}: {shortened(str(exc), 200)})", source=label
        ) from None
    return rows_from_table(Table(columns, records), label)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _check_hub_reachable(source: str, timeout_s: float = 3.0) -> None:
    """Fail at once, with no retries, when the dataset hub cannot be reached.

    ``datasets`` retries an unreachable hub five times with back-off (about 25 s of retry
    lines) before it gives up; one short request answers the same question. With
    ``HF_HUB_OFFLINE`` set there is nothing to probe: ``datasets`` reads its cache only.
    """
    if _hub_offline():
        return
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(
            urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s
        ).close()
    except urllib.error.HTTPError:
        return  # the server answered: it is reachable
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"looks like a Hugging Face dataset id, but the hub at {endpoint} cannot be reached "
            f"({reason}); to load a copy in the local datasets cache set HF_HUB_OFFLINE=1, or "
            f"pass a local file. A data source is {ACCEPTED_SOURCES}",
            source=source,
        ) from None
