"""The first mistakes a user makes are answered at once, by name, without the heavy imports.

A wrong spec is answered before torch, transformers, lightning or mlflow is imported; a
mistyped task name never reaches a dataset hub; a missing file or model folder says so; an
unreachable hub fails once, without retries.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from workbench.data.formats import load_dataset_rows
from workbench.models.loading import load_pretrained
from workbench.spec.errors import DataError, ModelError, SpecError
from workbench.spec.run_spec import RunSpec

HEAVY = ("torch", "transformers", "lightning", "mlflow", "datasets")


def cli_in_fresh_interpreter(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """``workbench ARGS`` in a fresh interpreter that prints which heavy libraries it imported."""
    code = textwrap.dedent(f"""
        import sys
        from workbench.cli.main import main
        rc = main({list(args)!r})
        print("imported:", sorted(m for m in {HEAVY!r} if m in sys.modules))
        sys.exit(rc)
    """)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@pytest.mark.parametrize("command", ["run", "launch"])
def test_a_mistyped_task_is_answered_before_any_heavy_import(tmp_path, command):
    spec = tmp_path / "bad.yaml"
    spec.write_text("data: {source: arithmetics}\n")
    done = cli_in_fresh_interpreter(command, str(spec))
    assert done.returncode == 2, done.stderr
    assert "data.source = 'arithmetics'" in done.stderr
    assert "did you mean 'arithmetic'?" in done.stderr
    for task in ("arithmetic", "reverse", "sort", "order"):
        assert task in done.stderr
    assert "Traceback" not in done.stderr
    assert "imported: []" in done.stdout


def test_the_cli_module_run_as_users_do_answers_a_bad_spec(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("data: {source: arithmetics}\n")
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "run", str(spec)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: invalid run spec:")
    assert "did you mean 'arithmetic'?" in done.stderr


def test_a_mistyped_builtin_base_gets_the_close_name_not_a_hub_error(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("model: {name: smollm2-instruct}\n")
    done = cli_in_fresh_interpreter("run", str(spec), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "no built-in base is called 'smollm2-instruct'" in done.stderr
    assert "did you mean 'smollm2-135m-instruct'?" in done.stderr
    assert "imported: []" in done.stdout


def test_missing_data_file_and_model_folder_are_named_before_any_heavy_import(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        f"model: {{name: {tmp_path / 'x' / 'model'}}}\ndata: {{source: ./missing.jsonl}}\n"
    )
    done = cli_in_fresh_interpreter("run", str(spec), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "data.source = './missing.jsonl': file not found" in done.stderr
    assert f"model.name = '{tmp_path / 'x' / 'model'}': model folder not found" in done.stderr
    assert "model.name accepts a built-in base (tiny, " in done.stderr
    assert "owner/name" in done.stderr
    assert "Repo id must be" not in done.stderr
    assert "imported: []" in done.stdout


def test_source_names_judged_by_their_form():
    with pytest.raises(SpecError, match=r"did you mean 'arithmetic'\?"):
        RunSpec.parse({"data": {"source": "arithmetics"}})
    with pytest.raises(SpecError, match=r"did you mean 'reverse'\?"):
        RunSpec.parse({"data": {"source": "Reverse"}})
    with pytest.raises(SpecError) as err:
        RunSpec.parse({"data": {"source": "xyzzy"}})
    assert "did you mean" not in str(err.value)
    assert "built-in tasks are arithmetic, reverse, sort, order" in str(err.value)
    # Files (existing or not: a stored spec stays readable anywhere) and hub ids pass.
    for source in ("data/train.jsonl", "./a", "~/data.csv", "/x/y/z", "owner/dataset-name", "sort"):
        assert RunSpec.parse({"data": {"source": source}}).data.source == source


def test_a_missing_model_folder_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("./nope", str(tmp_path / "x" / "model")):
        with pytest.raises(ModelError) as err:
            load_pretrained(name)
        message = str(err.value)
        assert "model folder not found" in message
        assert (
            "built-in base (tiny, " in message
            and "config.json" in message
            and "owner/name" in message
        )
        assert "Repo id" not in message


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_hub_fails_once_without_retries(monkeypatch, capfd):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(DataError) as err:
        load_dataset_rows("someone/some-data")
    message = str(err.value)
    assert message.startswith("someone/some-data: ")
    assert "the hub at http://127.0.0.1:" in message and "cannot be reached" in message
    assert "HF_HUB_OFFLINE=1" in message
    out, errs = capfd.readouterr()
    assert "Retry" not in out + errs


def test_offline_a_hub_name_not_cached_says_the_hub_is_off(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    with pytest.raises(DataError, match=r"not in the local datasets cache.*HF_HUB_OFFLINE is set"):
        load_dataset_rows("someone/some-data")
