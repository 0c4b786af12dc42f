"""What the CLI says, word for word: a spec that fails validation, a YAML syntax error, the
demo's closing hint. Each test asserts the exact text a user sees on the terminal."""

from __future__ import annotations

import pytest

from workbench.cli import main


def _write(tmp_path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_a_rule_over_the_whole_spec_prints_its_message_not_the_spec(tmp_path, capsys):
    path = _write(
        tmp_path,
        "model: tiny\ndata: arithmetic\nmethod: grpo\nobjectives:\n"
        "  - {name: correctness, direction: max, source: 'metric:exact_match'}\n",
    )
    assert main(["run", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "error: invalid run spec:\n"
        "  objectives: method 'grpo' trains on rewards, and no objective has a reward: source "
        "(the spec's objectives: correctness: metric:exact_match); add one, e.g. {name: correct, "
        "direction: max, source: 'reward:<name>', weight: 1} (register rewards with "
        "workbench.register_reward)\n"
    )


def test_a_rule_over_one_section_names_the_section_not_its_contents(tmp_path, capsys):
    path = _write(
        tmp_path,
        "model: tiny\ndata: arithmetic\n"
        "method: {name: grpo, min_completion_length: 9, max_completion_length: 4}\n"
        "objectives:\n  - {name: correct, direction: max, source: 'reward:correct'}\n",
    )
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err == (
        "error: invalid run spec:\n"
        "  method: min_completion_length = 9 is above max_completion_length = 4; lower it or "
        "raise the maximum\n"
    )


def test_a_bad_field_still_names_field_value_and_what_is_allowed(tmp_path, capsys):
    path = _write(tmp_path, "model: tiny\ntrain: {steps: 0}\n")
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err == (
        "error: invalid run spec:\n  train.steps = 0: Input should be greater than or equal to 1\n"
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "model: tiny\ndata: [order\n  x: 1\n",
            "line 3, column 4: not valid YAML: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence that starts at line 2, column 7)",
        ),
        (
            "model: tiny\n\tdata: order\n",
            "line 2, column 1: not valid YAML: found character '\\t' that cannot start any token",
        ),
        (
            'model: "tiny\n',
            "line 2, column 1: not valid YAML: found unexpected end of stream "
            "(while scanning a quoted scalar that starts at line 1, column 8)",
        ),
    ],
)
def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path, capsys, text, where):
    path = _write(tmp_path, text)
    for command in (
        ["run", str(path)],
        ["launch", str(path)],
        ["sweep", str(path), "--points", "3"],
    ):
        assert main(command) == 2
        assert capsys.readouterr().err == f"error: spec file {path}, {where}\n"


def test_a_study_configs_yaml_error_names_its_file_too(tmp_path, capsys):
    path = _write(tmp_path, "model: tiny\nsearch: {space: [1\n")
    assert main(["search", str(path), "--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: spec file {path}, line 3, column 1: not valid YAML: ")
    assert "<unicode string>" not in err


def test_the_demos_closing_hint_points_to_workbench_lab():
    from workbench import cli_commands

    assert cli_commands.DEMO_NEXT == (
        "\nNext: `workbench ui` serves the MLflow UI on http://127.0.0.1:5000 to compare the runs;\n"
        "`workbench lab` opens the teaching notebooks in JupyterLab (token-protected, on localhost;\n"
        "it needs the notebook packages: `scripts/setup.sh ui`)."
    )
