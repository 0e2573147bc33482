"""Bundles on the Hugging Face Hub: ``hf://org/name`` (or ``hf://org/name@revision``).

A bundle folder uploaded as a Hub model repository (``hf upload org/name BUNDLE``; its card is
also its ``README.md``, which the Hub shows) is fetched into the Hub's own cache by
``huggingface_hub`` and used from there; offline, a bundle already in that cache is used, and one
that is not gets an error saying so. ``HF_ENDPOINT`` points it at a mirror, ``HF_TOKEN`` at a
private repository.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import errors as hub_errors
from huggingface_hub import snapshot_download

from medsight import __version__
from medsight.errors import DownloadError, MedsightError

__all__ = ["HUB_PREFIX", "fetch_hub_bundle", "is_hub_uri"]

HUB_PREFIX = "hf://"


def is_hub_uri(text: object) -> bool:
    return isinstance(text, str) and text.startswith(HUB_PREFIX)


def fetch_hub_bundle(uri: str) -> Path:
    """The local folder of the bundle ``uri`` names, downloaded (or found in the cache)."""
    repo_id, _, revision = uri.removeprefix(HUB_PREFIX).partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise MedsightError(
            f"{uri}: a Hub bundle is named hf://ORG/NAME (or hf://ORG/NAME@REVISION)"
        )
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision or None,
                library_name="medsight",
                library_version=__version__,
            )
        )
    except (hub_errors.RepositoryNotFoundError, hub_errors.GatedRepoError) as exc:
        raise DownloadError(
            f"{uri}: no such model repository on the Hub, or it is private or gated "
            "(log in with `hf auth login` or set HF_TOKEN)"
        ) from exc
    except hub_errors.RevisionNotFoundError as exc:
        raise DownloadError(f"{uri}: the repository has no revision {revision!r}") from exc
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as exc:
        raise DownloadError(
            f"{uri}: cannot reach the Hugging Face Hub (offline, or HF_HUB_OFFLINE is set) and "
            "the bundle is not in the local Hub cache; download it once while online, or give "
            f"the bundle's folder instead ({exc})"
        ) from exc
    except hub_errors.HfHubHTTPError as exc:
        raise DownloadError(f"{uri}: the Hub refused the download: {exc}") from exc
    if not (folder / "bundle.json").is_file():
        raise MedsightError(
            f"{uri}: the repository holds no bundle.json, so it is not a medsight bundle "
            "(upload the bundle folder itself, e.g. RUN/bundle)"
        )
    return folder
