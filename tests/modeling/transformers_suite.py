"""Obtain transformers' own common test mixins (`ModelTesterMixin`, `ConfigTester`) for the installed version.

They are not in the transformers wheel, only in its sdist on PyPI, whose `tests/` folder holds the common files
but not every sibling package they import. This helper:

1. finds the sdist's `tests/` folder for the installed version in a cache (`$CULTURECLIP_TRANSFORMERS_TESTS`, else
   `.ci/cache/transformers-tests-<version>`), downloading the sdist with pip and extracting that folder when missing;
2. imports it under the package name `transformers_tests` (not `tests`, which is our own suite's folder name);
3. registers small stand-ins only for the sibling modules the sdist lacks: the export and generation mixins, and the
   `config_common_kwargs` table (which `ConfigTester` reads only for configs without sub-configs).

Run as a script (`python tests/modeling/transformers_suite.py`) to fetch ahead of time; CI does so.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import transformers

ENV_VAR = "CULTURECLIP_TRANSFORMERS_TESTS"
PACKAGE = "transformers_tests"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Files that must be in the extracted folder for it to count as complete.
REQUIRED_FILES = ("__init__.py", "test_modeling_common.py", "test_configuration_common.py")


class SuiteUnavailable(RuntimeError):
    """transformers' common test files could not be found, downloaded or imported."""


@dataclass(frozen=True)
class TransformersSuite:
    """The imported common-test modules and where they came from."""

    version: str
    folder: Path
    modeling: types.ModuleType  # transformers_tests.test_modeling_common
    configuration: types.ModuleType  # transformers_tests.test_configuration_common
    stubbed: tuple[str, ...]  # module names replaced by stand-ins because the sdist lacks them


def cache_root(version: str | None = None) -> Path:
    """Folder that holds (or will hold) the sdist's `tests/` contents for `version`."""
    version = version or transformers.__version__
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser().resolve()
    return REPO_ROOT / ".ci" / "cache" / f"transformers-tests-{version}"


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def _download_sdist(version: str, into: Path) -> Path:
    """Download the transformers sdist of `version` with pip; return the archive path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"transformers=={version}", "-d", str(into)]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = sorted(into.glob(f"transformers-{version}.tar.gz"))
    if result.returncode != 0 or not archives:
        raise SuiteUnavailable(
            f"could not download the transformers {version} sdist from PyPI (needed for its common model tests).\n"
            f"command: {' '.join(command)}\nexit code: {result.returncode}\n{result.stderr[-2000:]}\n"
            f"Fix: make PyPI reachable, or set {ENV_VAR} to a folder holding that sdist's tests/ contents."
        )
    return archives[0]


def _extract_tests(archive: Path, version: str, destination: Path) -> None:
    """Extract `transformers-<version>/tests/` of `archive` into `destination` atomically (temp dir + rename)."""
    prefix = f"transformers-{version}/tests/"
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=destination.parent))
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            if member.name.startswith(prefix) and member.name != prefix and (member.isfile() or member.isdir()):
                member.name = member.name[len(prefix):]
                members.append(member)
        if not members:
            raise SuiteUnavailable(f"{archive} has no {prefix} folder; cannot run transformers' common model tests")
        tar.extractall(staging, members=members, filter="data")
    # The repository's tests/ is a package but the sdist drops its empty __init__.py; test_configuration_common
    # reads that file (direct_transformers_import), so restore the empty marker.
    (staging / "__init__.py").touch()
    if not _is_complete(staging):
        raise SuiteUnavailable(f"{archive}: {prefix} lacks one of {REQUIRED_FILES}")
    if destination.exists():  # a concurrent run finished first; keep its copy
        return
    os.replace(staging, destination)


def ensure_tests_folder(version: str | None = None) -> Path:
    """Return the folder with the sdist's test files for `version`, downloading and extracting them if missing."""
    version = version or transformers.__version__
    folder = cache_root(version)
    if _is_complete(folder):
        return folder
    if folder.exists() and any(folder.iterdir()):
        raise SuiteUnavailable(f"{folder} exists but lacks {REQUIRED_FILES}; delete it to download again")
    with tempfile.TemporaryDirectory() as scratch:
        archive = _download_sdist(version, Path(scratch))
        if folder.exists():
            folder.rmdir()
        _extract_tests(archive, version, folder)
    return folder


class _CommonKwargsNotShipped(dict):
    """Stand-in for `config_common_kwargs`, which the sdist does not ship; any use fails loudly.

    `ConfigTester.check_config_arguments_init` reads it only for configs without sub-configs, so a composite
    config such as CultureCLIPConfig never touches it. Failing on use keeps that assumption checked.
    """

    def _refuse(self, *args, **kwargs):
        raise SuiteUnavailable("config_common_kwargs (tests/utils/test_configuration_utils.py) is not in the "
                               "transformers sdist; this check needs the full transformers repository")

    __getitem__ = __iter__ = __len__ = __deepcopy__ = items = keys = values = _refuse


def _stub_module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    module.__doc__ = "Stand-in registered by tests/modeling/transformers_suite.py: the sdist lacks this module."
    return module


def _stand_ins() -> dict[str, dict[str, object]]:
    """Sibling modules the common files import, with the names they take from each."""

    class ExportTesterMixin:
        """Stand-in: no torch.export tests (upstream's mixin lives in tests/exporters, absent from the sdist)."""

    class GenerationTesterMixin:
        """Stand-in: CLIP cannot generate, so only `issubclass` checks against this class run."""

    return {
        "exporters.test_export": {"ExportTesterMixin": ExportTesterMixin},
        "generation.test_utils": {"GenerationTesterMixin": GenerationTesterMixin},
        "utils.test_configuration_utils": {"config_common_kwargs": _CommonKwargsNotShipped()},
    }


def _register_package(folder: Path) -> list[str]:
    """Make `folder` importable as `transformers_tests`, with stand-ins for missing siblings; return their names."""
    existing = sys.modules.get(PACKAGE)
    if existing is not None and list(getattr(existing, "__path__", [])) != [str(folder)]:
        raise SuiteUnavailable(f"{PACKAGE} is already imported from {existing.__path__}, not {folder}")
    spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    sys.modules.setdefault(PACKAGE, importlib.util.module_from_spec(spec))
    stubbed = []
    for relative, attributes in _stand_ins().items():
        if (folder / (relative.replace(".", "/") + ".py")).is_file():
            continue  # a future sdist ships it: use the real one
        parent, _, _ = relative.rpartition(".")
        parent_name = f"{PACKAGE}.{parent}"
        if parent_name not in sys.modules:
            parent_module = _stub_module(parent_name)
            parent_module.__path__ = []  # a package with nothing else in it
            sys.modules[parent_name] = parent_module
        full = f"{PACKAGE}.{relative}"
        sys.modules.setdefault(full, _stub_module(full, **attributes))
        stubbed.append(full)
    return stubbed


def load_suite(version: str | None = None) -> TransformersSuite:
    """Fetch (if needed) and import transformers' common model and config test modules for `version`."""
    version = version or transformers.__version__
    folder = ensure_tests_folder(version)
    stubbed = _register_package(folder)
    try:
        modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
        configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    except ImportError as error:
        raise SuiteUnavailable(
            f"importing transformers {version}'s common tests from {folder} failed: {error!r}. A sibling module "
            "may need a stand-in in tests/modeling/transformers_suite.py, or a test dependency is not installed."
        ) from error
    return TransformersSuite(version, folder, modeling, configuration, tuple(stubbed))


if __name__ == "__main__":
    suite = load_suite()
    print(f"transformers {suite.version} common tests: {suite.folder} (stand-ins: {', '.join(suite.stubbed)})")
