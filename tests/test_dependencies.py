"""Dependency declarations: ranges in pyproject.toml, exact tested pins in constraints.txt.

pyproject.toml must stay installable into an existing environment (ranges, no ``==``), while
constraints.txt pins the one version of each declared dependency that ``make``, CI and
environment.yml install.  These checks keep the two files consistent with each other, with
environment.yml, and with the environment the suite is running in (so a green run proves the
pins were the versions tested).  No network, no installs.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def canonical(name: str) -> str:
    """PEP 503 normalised project name: lowercase, runs of ``-``, ``_``, ``.`` become ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, Requirement]:
    """Every dependency of pyproject.toml (runtime and all extras), by canonical name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    reqs: dict[str, Requirement] = {}
    for line in lines:
        req = Requirement(line)
        key = canonical(req.name)
        assert key not in reqs, f"{req.name} declared twice in pyproject.toml"
        reqs[key] = req
    return reqs


def constraint_lines() -> list[str]:
    lines = []
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def pins() -> dict[str, Version]:
    """constraints.txt as {canonical name: pinned version}; every line must be one ``name==version``."""
    out: dict[str, Version] = {}
    for line in constraint_lines():
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
            f"constraints.txt: {line!r} is not an exact name==version pin")
        assert not req.extras and req.marker is None and req.url is None, f"constraints.txt: {line!r}"
        key = canonical(req.name)
        assert key not in out, f"{req.name} pinned twice in constraints.txt"
        out[key] = Version(specs[0].version)
    return out


DECLARED = declared()


def test_canonical_names():
    assert canonical("PyYAML") == canonical("pyyaml") == "pyyaml"
    assert canonical("opencv_python.headless") == "opencv-python-headless"
    assert canonical("scikit_image") == "scikit-image"


def test_pyproject_declares_ranges_not_pins():
    assert DECLARED, "no dependencies found in pyproject.toml"
    for key, req in DECLARED.items():
        ops = {s.operator for s in req.specifier}
        assert ops, f"{req.name}: no version range in pyproject.toml"
        assert not ops & {"==", "==="}, f"{req}: exact pin in pyproject.toml; pin it in constraints.txt"
        assert any(op in {">=", ">", "~="} for op in ops), f"{req}: no lower bound"


def test_every_dependency_has_one_pin_inside_its_range():
    pinned = pins()
    missing = sorted(DECLARED[k].name for k in DECLARED if k not in pinned)
    assert not missing, f"no pin in constraints.txt for: {missing}"
    for key, req in DECLARED.items():
        assert req.specifier.contains(pinned[key], prereleases=True), (
            f"constraints.txt pins {req.name}=={pinned[key]}, outside pyproject.toml's {req.specifier}")


def test_constraints_pin_only_declared_dependencies():
    # Only direct dependencies are pinned; transitive ones are left to the resolver.
    extra = sorted(k for k in pins() if k not in DECLARED)
    assert not extra, f"constraints.txt pins packages pyproject.toml does not declare: {extra}"


def test_torch_pin_present():
    # The Makefile installs torch first from this pin (a CPU build, never an unpinned CUDA one).
    assert "torch" in pins()


def test_makefile_installs_with_constraints():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(VENV\)/\.installed:.*\bconstraints\.txt\b", text, re.M)
    installs = re.findall(r"^\t\$\(BIN\)/pip install .*$", text, re.M)
    assert installs, "no pip install in the Makefile"
    for line in installs:
        assert "-c constraints.txt" in line, f"Makefile installs without the constraints: {line.strip()}"
        assert "==" not in line, f"Makefile pins a version itself (pin it in constraints.txt): {line.strip()}"


def _conda_entries():
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = [line for d in deps if isinstance(d, dict) for line in d.get("pip", [])]
    return conda, pip


def test_environment_yml_uses_the_same_pins():
    conda, pip = _conda_entries()
    # pip section: single-sourced through the constraints file, no pins of its own.
    assert "-c constraints.txt" in [p.strip() for p in pip]
    for line in pip:
        assert "==" not in line, f"environment.yml pip section pins {line!r}; use constraints.txt"
    # conda section: every version given for a pinned package equals its constraints.txt pin.
    pinned = pins()
    for entry in conda:
        # conda match spec "name=version" or "name==version", optionally "=build"
        name, _, version = entry.split("#", 1)[0].partition("=")
        name, version = name.strip(), version.lstrip("=").split("=", 1)[0].strip()
        if not version or name in {"python"}:
            continue
        key = canonical(name)
        assert key in pinned, f"environment.yml pins {entry!r}, which constraints.txt does not"
        assert Version(version) == pinned[key], (
            f"environment.yml has {entry!r}, constraints.txt {name}=={pinned[key]}")


@pytest.mark.parametrize("key", sorted(pins()))
def test_installed_version_is_the_pin(key):
    """The running environment has exactly the pinned versions (a local label such as +cpu is allowed)."""
    pinned = pins()[key]
    try:
        installed = importlib.metadata.version(key)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{key} is pinned in constraints.txt but not installed")
    assert SpecifierSet(f"=={pinned}").contains(installed, prereleases=True), (
        f"{key}: installed {installed}, constraints.txt pins {pinned}")
