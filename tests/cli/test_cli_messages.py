"""What the CLI says, word for word: a spec that fails validation, a YAML syntax error, the
demo's closing hint. Each test asserts the exact text a user sees on the terminal."""

from __future__ import annotations

import pytest

from workbench.cli.main import main


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
    from workbench.cli.fronts import DEMO_NEXT

    assert DEMO_NEXT == (
        "\nNext: `workbench ui` serves the MLflow UI on http://127.0.0.1:5000 to compare the "
        "runs;\n"
        "`workbench lab` opens the teaching notebooks in JupyterLab (token-protected, on "
        "localhost;\n"
        "it needs the notebook packages: `scripts/setup.sh ui`)."
    )


# -- progress as a run trains -----------------------------------------------------------------


class _Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _screen(text: str) -> list[str]:
    """What a terminal shows for ``text``: a carriage return moves back to the line's start,
    and what follows overwrites what was there."""
    shown = []
    for line in text.split("\n"):
        cells: list[str] = []
        pos = 0
        for char in line:
            if char == "\r":
                pos = 0
                continue
            if pos < len(cells):
                cells[pos] = char
            else:
                cells.append(char)
            pos += 1
        shown.append("".join(cells).rstrip())
    return shown


def test_the_terminal_bar_shows_the_workbenchs_step_loss_and_eta_and_stays():
    import io

    from workbench.running.events import Evaluation, RunContext
    from workbench.running.progress import ProgressBar

    clock, out = _Clock(), io.StringIO()
    bar = ProgressBar(out, redraw_s=0.1, clock=clock)
    bar.on_start(RunContext("5f24d99c", None, 4))
    bar.on_evaluation(Evaluation(0, {"correctness": 0.25}))
    for t, step, loss in ((101.0, 1, 2.0), (102.0, 2, 1.5)):
        clock.t = t
        bar.on_step(step, {"train/loss": loss, "perf/step_s": 0.5})
    # Mid-run: one step took 1 s of wall time, two are left.
    assert (
        _screen(out.getvalue())[-1]
        == "step 2/4 [==========>         ] loss 1.5, 0.5 s/step, ETA 2 s"
    )
    clock.t = 102.05  # within redraw_s of the last frame: not drawn
    bar.on_step(3, {"train/loss": 1.25, "perf/step_s": 0.5})
    assert _screen(out.getvalue())[-1].startswith("step 2/4 ")
    clock.t = 103.0
    bar.on_step(4, {"train/loss": 1.0, "perf/step_s": 0.5})
    clock.t = 110.0  # the final evaluation is not training time
    bar.on_evaluation(Evaluation(4, {"correctness": 0.75}))
    bar.on_end("FINISHED")
    assert _screen(out.getvalue()) == [
        "run 5f24d99c: training 4 steps",
        "step 0/4  base model: correctness=0.25",
        "step 4/4  evaluation: correctness=0.75",
        "step 4/4 [====================] loss 1, 0.5 s/step, done in 2 s",
        "run ended FINISHED",
        "",
    ]


def test_redirected_output_gets_one_line_per_logged_step():
    from workbench.running.events import Evaluation, RunContext
    from workbench.running.progress import ProgressLines

    lines: list[str] = []
    progress = ProgressLines(lines.append, log_every=2)
    progress.on_start(RunContext("5f24d99c", None, 5))
    progress.on_evaluation(Evaluation(0, {"correctness": 0.25, "length": 14.0}))
    for step in range(1, 6):
        progress.on_step(step, {"train/loss": 3.0 / step, "perf/step_s": 0.02})
    progress.on_evaluation(Evaluation(5, {"correctness": 0.5, "length": 7.0}))
    progress.on_end("FINISHED")
    assert lines == [
        "run 5f24d99c: training 5 steps",
        "step 0/5  base model: correctness=0.25, length=14",
        "step 1/5  loss 3  0.02 s/step  ETA 0 s",
        "step 2/5  loss 1.5  0.02 s/step  ETA 0 s",
        "step 4/5  loss 0.75  0.02 s/step  ETA 0 s",
        "step 5/5  loss 0.6  0.02 s/step",
        "step 5/5  evaluation: correctness=0.5, length=7",
        "run ended FINISHED",
    ]


@pytest.mark.parametrize(
    ("tty", "no_progress", "shown"),
    [
        (True, False, "ProgressBar"),
        (False, False, "ProgressLines"),
        (True, True, None),
        (False, True, None),
    ],
)
def test_run_picks_the_bar_on_a_terminal_and_lines_elsewhere(monkeypatch, tty, no_progress, shown):
    import io
    import sys

    from workbench.cli.main import build_parser
    from workbench.cli.runs import progress_observers
    from workbench.spec.run_spec import RunSpec

    class Stdout(io.StringIO):
        def isatty(self):
            return tty

    monkeypatch.setattr(sys, "stdout", Stdout())
    args = build_parser().parse_args(
        ["run", "spec.yaml", *(["--no-progress"] if no_progress else [])]
    )
    spec = RunSpec.parse({"train": {"log_every": 3}})
    observers = progress_observers(args, spec)
    assert [type(o).__name__ for o in observers] == ([shown] if shown else [])
    if shown == "ProgressLines":
        assert observers[0].log_every == 3
