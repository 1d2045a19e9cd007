"""The `llm-serving-cdk` distribution: metadata in step with the pins and the version, and a wheel
(built offline from a copy of the sources) that ships both packages, their data files and the
runtime's handler, and works installed away from this checkout."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import llm_serving
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DISTRIBUTION = "llm-serving-cdk"
RUNTIME = ROOT / "lambda" / "llm_gateway"


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_dependencies_are_compatible_ranges_around_the_pins() -> None:
    """Each synth requirement is a range that admits its pin and stops at the next major."""
    pins = _pins(ROOT / "requirements.txt")
    del pins["setuptools"]  # installs this checkout editable; not a dependency of the package
    requirements = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    assert {canonicalize_name(r.name) for r in requirements} == set(pins)
    for requirement in requirements:
        pin = pins[canonicalize_name(requirement.name)]
        major = int(pin.split(".")[0])
        assert requirement.specifier.contains(pin), f"{requirement} excludes the pin {pin}"
        assert str(requirement.specifier) == f"<{major + 1},>={pin}", requirement


def test_version_has_one_source() -> None:
    """pyproject reads llm_serving.__version__; the editable install and the changelog agree."""
    project = PYPROJECT["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "llm_serving.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", llm_serving.__version__)
    assert metadata.version(DISTRIBUTION) == llm_serving.__version__, "run `make setup`"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert released[0] == llm_serving.__version__


def _source_files(package_dir: Path, package: str) -> set[str]:
    return {
        f"{package}/{p.relative_to(package_dir).as_posix()}"
        for p in package_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of what the distribution needs, so the build touches nothing here;
    offline (no index, no build isolation: setuptools is pinned in requirements.txt)."""
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "llm_serving", source / "llm_serving", ignore=ignore)
    shutil.copytree(RUNTIME, source / "lambda" / "llm_gateway", ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "--wheel-dir", str(dist),
         str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = dist.glob("*.whl")
    return built


def test_wheel_ships_both_packages_and_their_data(wheel: Path) -> None:
    version = llm_serving.__version__
    assert wheel.name == f"llm_serving_cdk-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        run_sh_mode = archive.getinfo("llm_gateway/run.sh").external_attr >> 16
        meta = Parser().parsestr(
            archive.read(f"llm_serving_cdk-{version}.dist-info/METADATA").decode()
        )
    packaged = {n for n in names if ".dist-info/" not in n}
    expected = _source_files(ROOT / "llm_serving", "llm_serving") | _source_files(
        RUNTIME, "llm_gateway"
    )
    assert packaged == expected
    for data in (
        "llm_serving/py.typed",
        "llm_serving/config/images.json",
        "llm_gateway/py.typed",
        "llm_gateway/run.sh",
        "llm_gateway/requirements.txt",
    ):
        assert data in packaged, data
    assert run_sh_mode & stat.S_IXUSR, "run.sh must stay executable"

    assert meta["Name"] == DISTRIBUTION
    assert meta["Version"] == version
    assert meta["Requires-Python"] == ">=3.11"
    assert sorted(meta.get_all("Requires-Dist") or []) == sorted(
        str(Requirement(r)) for r in PYPROJECT["project"]["dependencies"]
    )


def test_installed_wheel_works_away_from_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """Installed into a plain directory (dependencies from this venv): the library imports from
    there, and the bundler finds the runtime there, with its handler and requirements."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert os.access(target / "llm_gateway" / "run.sh", os.X_OK)
    probe = (
        "import llm_gateway, llm_serving, llm_serving.config\n"
        "from llm_serving.bundling import runtime_dir\n"
        "from llm_serving.config import image_versions\n"
        "print(llm_serving.__file__)\n"
        "print(llm_gateway.__file__)\n"
        "print(runtime_dir())\n"
        "print(image_versions('vllm'))\n"
    )
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=app_dir,
        env={
            **os.environ,
            "PYTHONPATH": str(target),
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    library, runtime, runtime_directory, versions = result.stdout.splitlines()
    assert Path(library) == target / "llm_serving" / "__init__.py"
    assert Path(runtime) == target / "llm_gateway" / "__init__.py"
    assert Path(runtime_directory) == target / "llm_gateway"
    assert "0.30.0" in versions
