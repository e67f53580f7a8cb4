"""Scripts for child processes that cannot import this project, like a user who has only transformers installed.

The package is installed editable in development and CI, which exposes it through a meta-path finder, a path hook
and the repository on sys.path; a finder placed first on sys.meta_path that refuses the project's names hides it
whichever of those would have served it. Remote code loads as `transformers_modules.*` and is not affected.
"""

import textwrap

PROJECT_PACKAGES = ("modeling_cultureclip", "cultureclip_training", "dataset_builder", "evaluate_suite",
                    "cultureclip_demo", "train")

_PRELUDE = '''\
import importlib.abc as _abc, sys as _sys


class _HideProject(_abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {packages!r}:
            raise ModuleNotFoundError(f"{{name}} is hidden from this process")


_sys.meta_path.insert(0, _HideProject())
'''


def without_project(script: str) -> str:
    """`script` (dedented) preceded by code that makes this project's packages unimportable in its process."""
    return _PRELUDE.format(packages=PROJECT_PACKAGES) + textwrap.dedent(script)
