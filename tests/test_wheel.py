"""The distributed wheel: looper_cli as Python, Regime W only compiled.

Builds the wheel the way a release does, checks its exact kinds of content,
then installs it into a fresh venv and runs it from another directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from conftest import ROOT

# What a release wheel may hold, by kind; anything else fails the test.
ALLOWED_REGIME_W = {"regime_w_core/__init__.py", "regime_w_core/__init__.pyi",
                    "regime_w_core/regime_w_core.pyi", "regime_w_core/py.typed"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "maturin", "build", "--release", "-o", str(out)],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    (found,) = out.glob("looper-*.whl")
    return found


def test_wheel_is_abi3_and_holds_only_the_expected_kinds(wheel: Path) -> None:
    assert "-abi3-" in wheel.name and "cp310" in wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    kinds = {"py": 0, "so": 0, "pyi": 0, "typed": 0, "dist-info": 0}
    for name in names:
        path = PurePosixPath(name)
        if path.parts[0].endswith(".dist-info"):
            kinds["dist-info"] += 1
        elif path.parts[0] == "looper_cli" and path.suffix == ".py":
            kinds["py"] += 1
        elif path.parts[0] == "regime_w_core" and path.name.endswith(".abi3.so"):
            kinds["so"] += 1
        elif name in ALLOWED_REGIME_W:
            kinds["pyi" if name.endswith(".pyi") else "typed" if name.endswith("py.typed") else "py"] += 1
        else:
            pytest.fail(f"unexpected file in wheel: {name}")
    assert kinds["so"] == 1 and kinds["pyi"] >= 1 and kinds["typed"] == 1 and kinds["py"] > 10
    assert not any(n.endswith((".rs", ".toml", ".lock")) or "Cargo" in n for n in names)
    assert not any("sboms" in n for n in names), "the SBOM names the build path"


def test_wheel_regime_w_python_is_only_a_reexport(wheel: Path) -> None:
    init = zipfile.ZipFile(wheel).read("regime_w_core/__init__.py").decode()
    code = [line for line in init.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all(line.startswith("from .regime_w_core import") for line in code), code


def test_shared_object_names_no_build_paths(wheel: Path, tmp_path: Path) -> None:
    (so_name,) = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]
    blob = zipfile.ZipFile(wheel).read(so_name)
    for needle in (str(ROOT), str(Path.home()), "/work/", "regime_w_core/src/"):
        assert needle.encode() not in blob, f"{needle} found in {so_name}"


def test_installed_wheel_runs_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    helped = subprocess.run([str(venv / "bin" / "looper"), "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "rollout" in helped.stdout
    imported = subprocess.run([str(py), "-c", "import regime_w_core as r, looper_cli; "
                               "print(r.__file__); print(r.extract_answer('#### 42').value)"],
                              cwd=elsewhere, env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert str(venv) in imported.stdout and imported.stdout.split()[-1] == "42.0"
