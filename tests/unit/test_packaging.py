"""The wheel is Enclave: built, installed into a fresh virtual environment, and run from
outside the checkout, it finds its personas, manifests and stylesheet and answers."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set(find_packages(str(ROOT), include=["assistant", "assistant.*", "tui", "tui.*"]))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert set(config["package-dir"]) <= listed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; the runtime dependencies are borrowed (read-only)
    from this test's environment, so nothing is downloaded."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work), str(ROOT)],
        check=True,
        cwd=work,
    )
    wheel = next(work.glob("enclave-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True,
    )  # fmt: skip
    # Dependencies come from this environment's site-packages, which holds no Enclave
    # code (the checkout is installed editable, through a finder this .pth does not run).
    (target / "borrowed-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


def _enclave(venv: Path, cwd: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["ENCLAVE_HOME"] = str(home)
    return subprocess.run(
        [str(venv / "bin" / "enclave"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_installed_wheel_answers_from_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = tmp_path / "elsewhere"
    where.mkdir()
    code = "import assistant, tui; print(assistant.__file__); print(tui.__file__)"
    files = subprocess.run([str(installed / "bin" / "python"), "-c", code], cwd=where, capture_output=True, text=True)
    assert files.returncode == 0, files.stderr
    assert all(str(installed) in line for line in files.stdout.splitlines()), files.stdout

    home = tmp_path / "home"
    listed = _enclave(installed, where, home, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    buildable = {row["name"] for row in json.loads(listed.stdout)["buildable"]}
    assert "smollm2-135m-instruct" in buildable  # the manifests shipped in the wheel

    model = where / "tiny-llama"
    shutil.copytree(ROOT / "tests" / "assets" / "tiny-llama", model)
    added = _enclave(installed, where, home, "models", "add", str(model), "--name", "tiny")
    assert added.returncode == 0, added.stderr
    answer = _enclave(
        installed, where, home, "ask", "--json", "-m", "tiny", "--max-tokens", "8", "-p", "technician", "Hi"
    )
    assert answer.returncode == 0, answer.stderr
    result = json.loads(answer.stdout)
    assert result["model"] == "tiny" and result["usage"]["completion_tokens"] > 0
    help_text = _enclave(installed, where, home, "--help")
    assert "tui" in help_text.stdout  # the terminal UI registered itself through its entry point


def test_the_installed_wheel_names_pip_commands_that_work_without_a_checkout(installed: Path, tmp_path: Path) -> None:
    """A hint of `pip install -e '.[build]'` is no use to someone who installed the wheel
    (there is no checkout), nor is `enclave[build]` (the index's "enclave" is another
    project): the pinned requirements are named from the wheel's own metadata."""
    code = (
        "from assistant.core.install import checkout, extra_command, requirement_command\n"
        "print(checkout()); print(extra_command('build')); print(requirement_command('onnxruntime-genai'))"
    )
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    where, build, runtime = out.stdout.splitlines()
    assert where == "None"
    assert build.startswith("pip install torch==2.13.0 ") and "transformers==" in build and "-e" not in build
    assert runtime == "pip install onnxruntime-genai==0.18.0"
