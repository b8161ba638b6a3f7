"""Package data, found through :mod:`importlib.resources`: the one place that knows where it lives.

Shipped inside the installed package (``pip install colondepth``, wheel or editable) and, in a source
checkout, symbolic links to the checkout's own folders:

- ``default_model.pt`` -> ``data/default_model.pt``: the default depth model;
- ``recipes/`` -> ``synth/``: the level recipes ``L1_straight.yaml`` ... ;
- ``curricula/`` -> ``curricula/``: the training curricula.

Where symbolic links are not supported (a checkout on a file system without them) the checkout's folders
are used directly.  The review app is the subpackage :mod:`colondepth.app` (:func:`app_script`).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from colondepth.errors import UserError

#: Environment variable naming the folder of third-party sample data (``simcol3d_sample/``, ...).
SHARED_DATA_ENV = "COLONDEPTH_SHARED_DATA"

_CHECKOUT_FOLDERS = {"default_model.pt": Path("data") / "default_model.pt", "recipes": Path("synth"),
                     "curricula": Path("curricula")}


def checkout_root() -> Path | None:
    """The source checkout this package is imported from (the folder holding ``pyproject.toml``), or ``None``
    for an installed package."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "colondepth").is_dir() else None


def _resource(name: str) -> Path:
    path = Path(str(files("colondepth.resources") / name))
    if path.exists():
        return path
    root = checkout_root()
    if root is not None and (root / _CHECKOUT_FOLDERS[name]).exists():
        return root / _CHECKOUT_FOLDERS[name]
    return path


def default_model_path() -> Path:
    """The shipped default depth model (``default_model.pt``; may be absent in a trimmed install)."""
    return _resource("default_model.pt")


def recipes_dir() -> Path:
    """Folder of the shipped level recipes (``L1_straight.yaml`` ...)."""
    return _resource("recipes")


def curricula_dir() -> Path:
    """Folder of the shipped curricula (``default_model.yaml``, ``demo.yaml`` ...)."""
    return _resource("curricula")


def _named(spec: str | os.PathLike, folder: Path, what: str, flag: str, example: str) -> Path:
    p = Path(spec)
    if p.exists():  # a file (or a folder: the loader says what is wrong with it)
        return p
    shipped = sorted(folder.glob("*.yaml"))
    if p.parent == Path("."):
        name = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
        exact = [s for s in shipped if s.name == name]
        prefix = [s for s in shipped if s.stem.split("_")[0] == p.stem]  # "L3" -> L3_haustra.yaml
        for hit in (exact, prefix):
            if len(hit) == 1:
                return hit[0].resolve()  # the file itself: relative paths inside it resolve from its folder
    names = ", ".join(s.stem for s in shipped) or "none installed"
    raise UserError(f"{flag} {spec}: {what} file not found; pass an existing YAML file (such as {example}) or the "
                    f"name of a shipped {what}: {names}")


def recipe_path(spec: str | os.PathLike) -> Path:
    """A level recipe: an existing file, or a shipped one by name (``L3``, ``L3_haustra``, ``L3_haustra.yaml``).

    >>> recipe_path("L3").name
    'L3_haustra.yaml'
    """
    return _named(spec, recipes_dir(), "recipe", "--recipe", "synth/L3_haustra.yaml")


def curriculum_path(spec: str | os.PathLike) -> Path:
    """A curriculum: an existing file, or a shipped one by name (``default_model``, ``demo.yaml``).

    >>> curriculum_path("demo").name
    'demo.yaml'
    """
    return _named(spec, curricula_dir(), "curriculum", "--curriculum", "curricula/default_model.yaml")


def app_script() -> Path:
    """The review app's entry script (``colondepth/app/review.py``)."""
    script = Path(str(files("colondepth.app") / "review.py"))
    if not script.is_file():
        raise UserError(f"{script}: review app not found; reinstall colondepth (the app ships with the package)")
    return script


def default_shared_data() -> Path | None:
    """Third-party sample data: ``$COLONDEPTH_SHARED_DATA``, else ``../shared/data`` beside a source checkout,
    else ``None``."""
    if os.environ.get(SHARED_DATA_ENV):
        return Path(os.environ[SHARED_DATA_ENV])
    root = checkout_root()
    return None if root is None else root.parent / "shared" / "data"
