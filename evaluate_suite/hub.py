"""The one place the suite talks to the Hub for benchmark data: a filtered snapshot of a dataset repo.

Everything else reads local folders. Tests replace `fetch_hub_snapshot` (this module's attribute) with a function
that returns a fixture folder and a fake commit hash; that stands for the Hub's network and cache, nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from cultureclip_guards import BadInput

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class HubFetchError(BadInput, RuntimeError):
    """The Hub could not give the requested files (offline and not cached, missing repo or revision, gated)."""


def fetch_hub_snapshot(repo_id: str, revision: str | None, allow_patterns: Sequence[str]) -> tuple[Path, str]:
    """Download (or find in the cache) only the files of dataset repo `repo_id` matching `allow_patterns`.

    Returns (local snapshot folder, resolved commit hash). The folder is the cache's `snapshots/<commit>` folder, so
    its name is the commit the files came from, whatever branch or tag `revision` named.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision,
                                        allow_patterns=list(allow_patterns)))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
        raise HubFetchError(f"cannot fetch dataset {repo_id!r} (revision {revision or 'main'}) from the Hub: "
                            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    if not _COMMIT.match(folder.name):
        raise HubFetchError(f"snapshot of {repo_id!r} is not in a commit-named cache folder ({folder}); "
                            "cannot record the revision it came from")
    return folder, folder.name


__all__ = ["HubFetchError", "fetch_hub_snapshot"]
