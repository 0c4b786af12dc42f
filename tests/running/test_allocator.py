"""Training processes on mimalloc: the environment that preloads it, a process started in it
(it runs on mimalloc, and hands its children their usual allocator), the command line's
restart onto it, its purge delay as ``train.reuse_freed_memory``, the run's tag, and the
opt-out. Each process case runs in a fresh interpreter: a process cannot change its malloc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, run_cli
from workbench.running import allocator
from workbench.spec.errors import SpecError

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="mimalloc is preloaded on Linux only"
)

# What a process reports of itself: its allocator, the LD_PRELOAD and marker it now has, and
# the allocator of a child it starts with its own environment.
REPORT = r"""
import json, os, subprocess, sys
import workbench
from workbench.running import allocator
child = subprocess.run([sys.executable, "-c",
    "from workbench.running import allocator; print(allocator.running())"],
    capture_output=True, text=True, check=True).stdout.strip()
print(json.dumps({"pid": os.getpid(), "allocator": allocator.running(),
                  "preload": os.environ.get("LD_PRELOAD"),
                  "marker": os.environ.get("WORKBENCH_PRELOAD_BEFORE"), "child": child}))
"""


def run_python(args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def clean_env(**extra: str) -> dict[str, str]:
    ours = (allocator.ALLOCATOR_ENV, allocator.PRELOAD_ENV, allocator.PRELOAD_BEFORE_ENV,
            allocator.PURGE_DELAY_ENV)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ours}
    return {**env, **extra}


def test_the_library_is_installed_with_the_workbench():
    library = allocator.mimalloc_library()
    assert library is not None and library.name == "libmimalloc.so" and library.is_file()


def test_the_environment_preloads_mimalloc_in_front_of_what_was_there():
    library = str(allocator.mimalloc_library())
    env = allocator.preload_environment(clean_env())
    assert env["LD_PRELOAD"] == library and env["WORKBENCH_PRELOAD_BEFORE"] == ""
    # Freed memory kept from the start, unless the user set mimalloc's delay themselves.
    assert env["MIMALLOC_PURGE_DELAY"] == "-1"
    assert (
        allocator.preload_environment(clean_env(MIMALLOC_PURGE_DELAY="100"))["MIMALLOC_PURGE_DELAY"]
        == "100"
    )

    theirs = allocator.preload_environment(clean_env(LD_PRELOAD="libtheirs.so"))
    assert theirs["LD_PRELOAD"] == f"{library}:libtheirs.so"
    assert theirs["WORKBENCH_PRELOAD_BEFORE"] == "libtheirs.so"
    # Already in front: nothing is added twice.
    assert allocator.preload_environment(theirs) == theirs


def test_system_opts_out_and_a_wrong_value_names_the_choices():
    env = clean_env(WORKBENCH_ALLOCATOR="system")
    assert allocator.preload_environment(env) == env
    assert allocator.preload_environment(clean_env(WORKBENCH_ALLOCATOR="MiMalloc"))["LD_PRELOAD"]
    with pytest.raises(SpecError, match="WORKBENCH_ALLOCATOR='tcmalloc'.*mimalloc, system"):
        allocator.preload_environment(clean_env(WORKBENCH_ALLOCATOR="tcmalloc"))


def test_a_process_started_on_mimalloc_runs_on_it_and_its_children_do_not():
    report = run_python(["-c", REPORT], allocator.preload_environment(clean_env()))
    assert report["allocator"].startswith("mimalloc ")
    # Importing workbench took LD_PRELOAD back to what it was (nothing), marker and all...
    assert report["preload"] is None and report["marker"] is None
    # ...so the process's own children run on the C library's malloc.
    assert report["child"] == "system"


def test_a_process_started_plainly_runs_on_the_system_allocator():
    report = run_python(["-c", REPORT], clean_env())
    assert report["allocator"] == "system" and report["child"] == "system"


def write_restarting_module(folder) -> None:
    (folder / "restarting_probe.py").write_text(
        textwrap.dedent(
            """
            import json, os, sys
            from workbench.running import allocator
            print(json.dumps({"stage": "before", "pid": os.getpid()}), flush=True)
            allocator.restart_on_mimalloc("restarting_probe", sys.argv[1:])
            print(json.dumps({"stage": "after", "pid": os.getpid(), "args": sys.argv[1:],
                              "allocator": allocator.running(),
                              "preload": os.environ.get("LD_PRELOAD")}))
            """
        ),
        encoding="utf-8",
    )


def restart(folder, env) -> list[dict]:
    env = {**env, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "restarting_probe", "--flag", "value"], env=env,
                         capture_output=True, text=True, timeout=120, cwd=folder)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_restart_runs_the_same_command_again_in_the_same_process_on_mimalloc(tmp_path):
    write_restarting_module(tmp_path)
    lines = restart(tmp_path, clean_env())
    # Started once, restarted once on mimalloc, with its arguments; then no further restart.
    assert [line["stage"] for line in lines] == ["before", "before", "after"]
    assert len({line["pid"] for line in lines}) == 1  # exec keeps the process (and its PID)
    assert lines[-1]["args"] == ["--flag", "value"]
    assert lines[-1]["allocator"].startswith("mimalloc ") and lines[-1]["preload"] is None


def test_restart_is_skipped_when_opted_out_and_never_tried_twice(tmp_path):
    write_restarting_module(tmp_path)
    lines = restart(tmp_path, clean_env(WORKBENCH_ALLOCATOR="system"))
    assert [line["stage"] for line in lines] == ["before", "after"]
    assert lines[-1]["allocator"] == "system"

    # A process the workbench already restarted (the marker seen on import) does not restart,
    # even where the preload did not take (here: the marker without the library).
    lines = restart(tmp_path, clean_env(WORKBENCH_PRELOAD_BEFORE=""))
    assert [line["stage"] for line in lines] == ["before", "after"]
    assert lines[-1]["allocator"] == "system"


# train.reuse_freed_memory under mimalloc: its purge delay, set per run.
PURGE = r"""
import json
from workbench.running import allocator, heap
delays = []
for reuse in (True, False, True):
    delays.append([heap.set_freed_memory_policy(reuse), allocator.purge_delay()])
print(json.dumps(delays))
"""


def test_the_freed_memory_policy_sets_mimallocs_purge_delay():
    out = subprocess.run([sys.executable, "-c", PURGE], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=allocator.preload_environment(clean_env()))  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [[True, -1], [True, 0], [True, -1]]
    # Where mimalloc is not running there is no purge delay to set.
    assert allocator.purge_delay() is None or allocator.running() != "system"
    assert allocator.set_purge(True) is (allocator.running() != "system")


def test_a_training_command_names_a_wrong_allocator_in_one_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("method: sft\n")
    out = run_cli("run", str(spec), env={"WORKBENCH_ALLOCATOR": "tcmalloc"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "WORKBENCH_ALLOCATOR='tcmalloc' is not an allocator" in out.stderr
