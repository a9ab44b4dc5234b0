"""Bundles on the Hugging Face Hub: ``hf://owner/name[@revision][/path]`` wherever a bundle directory is accepted.

The reference follows huggingface_hub's URI grammar (``hf://[models/]<repo id>[@<revision>][/<path in repo>]``;
a revision with a ``/`` is written ``refs/pr/N`` or percent-encoded, e.g. ``release%2Fv2``). The bundle's files are
fetched into the Hugging Face cache with ``huggingface_hub.snapshot_download`` (token, ``HF_ENDPOINT``,
``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` as huggingface_hub reads them) and then verified like any bundle: the
manifest pins every file's sha256. A branch or tag (``main`` by default) is looked up on each load - a reload
(``reload_interval_s``) serves a bundle pushed since - and a cached snapshot is served while the Hub cannot be
reached; a 40-hex commit is never looked up again once cached. ``huggingface_hub`` is imported only when a
reference is resolved.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from .errors import BundleLocationError

SCHEME = "hf://"
_REPO_TYPE_PREFIXES = ("models/", "datasets/", "spaces/", "buckets/", "kernels/")
_SPECIAL_REF = re.compile(r"^refs/(?:pr/\d+|convert/[\w.-]+)")
_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SYNTAX = "hf://owner/name[@revision][/path/in/repo]"
# a cache directory that cannot be written: read-only file system, no permission, no space, a file in the way
_CACHE_WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR, errno.EEXIST,
                                 errno.EISDIR})


@dataclass(frozen=True)
class HubBundleRef:
    """A parsed ``hf://`` bundle reference."""

    repo_id: str
    revision: str | None = None  # None: the repository's default branch (main)
    path: str = ""  # folder inside the repository holding manifest.json; "" = the repository's root

    def __str__(self) -> str:
        rev = f"@{self.revision.replace('/', '%2F') if not _SPECIAL_REF.match(self.revision) else self.revision}" \
            if self.revision else ""
        return f"{SCHEME}{self.repo_id}{rev}{'/' + self.path if self.path else ''}"

    @property
    def pinned(self) -> bool:
        """Whether the revision is a commit hash (immutable: never looked up again once cached)."""
        return self.revision is not None and bool(_COMMIT.match(self.revision))


def is_hub_reference(location: object) -> bool:
    """Whether ``location`` is an ``hf://`` reference (rather than a directory)."""
    return isinstance(location, str) and location.startswith(SCHEME)


def parse_hub_reference(location: str) -> HubBundleRef:
    """Parse ``hf://owner/name[@revision][/path]``; :class:`BundleLocationError` names what is wrong."""
    if not is_hub_reference(location):
        raise BundleLocationError(f"{location!r} is not a Hugging Face Hub bundle reference ({_SYNTAX})")
    rest = location[len(SCHEME):]
    if rest.startswith("models/"):
        rest = rest[len("models/"):]
    elif rest.startswith(_REPO_TYPE_PREFIXES):
        kind = rest.split("/", 1)[0]
        raise BundleLocationError(
            f"bundle reference {location!r} names a {kind[:-1]} repository; a bundle lives in a model repository: "
            f"{_SYNTAX} (push one with `prefill-router push --bundle DIR --repo owner/name`)")
    owner, _, after_owner = rest.partition("/")
    name_end = re.search(r"[@/]", after_owner)
    name = after_owner[:name_end.start()] if name_end else after_owner
    tail = after_owner[len(name):]
    for part, what in ((owner, "owner"), (name, "repository name")):
        if not part or not _REPO_PART.match(part) or ".." in part or len(part) > 96:
            raise BundleLocationError(
                f"bundle reference {location!r}: {what} {part!r} is not a valid Hugging Face name (letters, digits, "
                f"'-', '_', '.'; at most 96 characters); write {_SYNTAX}")
    revision: str | None = None
    if tail.startswith("@"):
        after = tail[1:]
        special = _SPECIAL_REF.match(after)
        if special:
            revision, tail = special.group(0), after[special.end():]
        else:
            revision, _, path_part = after.partition("/")
            tail = "/" + path_part if path_part else ""
            revision = unquote(revision)
        if not revision:
            raise BundleLocationError(f"bundle reference {location!r} has an empty revision after '@'; write "
                                      f"{_SYNTAX} or leave '@' out for the default branch")
    path = tail.strip("/")
    if path and any(p in ("", ".", "..") for p in path.split("/")):
        raise BundleLocationError(f"bundle reference {location!r}: path {path!r} inside the repository must be a "
                                  "plain relative folder (no '.', '..' or empty parts)")
    return HubBundleRef(repo_id=f"{owner}/{name}", revision=revision, path=path)


@dataclass(frozen=True)
class ResolvedBundle:
    """Where a bundle's files are on disk: ``directory`` holds manifest.json; a file may be a link into
    ``files_root`` (the Hugging Face cache keeps each file once, under the repository's folder)."""

    directory: Path
    files_root: Path
    source: str  # what the user wrote; for the Hub with the commit served: hf://owner/name@<commit>/path


def resolve_bundle(location: str | os.PathLike[str]) -> ResolvedBundle:
    """A bundle directory as is; an ``hf://`` reference fetched (or found in the cache) first."""
    if not is_hub_reference(location):
        directory = Path(location).expanduser()
        return ResolvedBundle(directory, directory, str(location))
    assert isinstance(location, str)
    return _fetch(parse_hub_reference(location), location)


def _fetch(ref: HubBundleRef, location: str) -> ResolvedBundle:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as err:  # a dependency of litellm and tokenizers, so normally present
        raise BundleLocationError(f"loading bundle {location!r} needs huggingface_hub>=0.26: "
                                  f"pip install 'huggingface_hub>=0.26' ({err})") from err
    from . import __version__

    prefix = f"{ref.path}/" if ref.path else ""

    def download(revision: str | None, names: list[str]) -> Path:
        return Path(snapshot_download(ref.repo_id, repo_type="model", revision=revision, allow_patterns=names,
                                      library_name="litellm-prefill-router", library_version=__version__))

    try:
        # the manifest first, then exactly the files it lists at the same commit (a push in between cannot mix
        # two bundles; other files of the repository - a model card, other bundles - are not fetched)
        snapshot_dir = download(ref.revision, [prefix + "manifest.json"])
        names = _listed_files(snapshot_dir / prefix / "manifest.json")
        if names:
            snapshot_dir = download(snapshot_dir.name if _COMMIT.match(snapshot_dir.name) else ref.revision,
                                    [prefix + n for n in names])
    except GatedRepoError as err:
        raise BundleLocationError(
            f"bundle {location!r}: {ref.repo_id} is a gated repository; accept its terms on the Hub and log in "
            f"(`hf auth login`, or set HF_TOKEN) ({type(err).__name__})") from err
    except RevisionNotFoundError as err:
        raise BundleLocationError(
            f"bundle {location!r}: {ref.repo_id} has no revision {ref.revision!r}; name a branch, tag or commit "
            f"that exists ({type(err).__name__})") from err
    except RepositoryNotFoundError as err:
        raise BundleLocationError(
            f"bundle {location!r}: repository {ref.repo_id} was not found on the Hub, or it is private and no "
            f"token with access was sent; check the name, or log in (`hf auth login`, or set HF_TOKEN) "
            f"({type(err).__name__})") from err
    except LocalEntryNotFoundError as err:
        raise BundleLocationError(
            f"bundle {location!r} is not in the Hugging Face cache ({HF_HUB_CACHE}) "
            f"and the Hub could not be reached (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}); fetch it "
            f"once with the network up (e.g. `prefill-router info --bundle {location}`), or point at a bundle "
            f"directory ({err})") from err
    except (HfHubHTTPError, ValueError) + transport_errors() as err:
        if isinstance(err, OSError) and err.errno in _CACHE_WRITE_ERRNOS:
            raise BundleLocationError(
                f"bundle {location!r}: the Hugging Face cache at {HF_HUB_CACHE} cannot be written "
                f"({type(err).__name__}: {err}); set HF_HOME (or HF_HUB_CACHE) to a writable directory, or copy the "
                f"bundle into the image at "
                f"build time with `prefill-router pull --bundle {location} --out DIR`") from err
        raise BundleLocationError(f"bundle {location!r}: fetching {ref.repo_id} from the Hub failed: "
                                  f"{type(err).__name__}: {err}") from err
    commit = snapshot_dir.name
    directory = snapshot_dir / ref.path if ref.path else snapshot_dir
    # <cache>/models--owner--name/snapshots/<commit>: files link to <cache>/models--owner--name/blobs
    files_root = snapshot_dir.parent.parent if snapshot_dir.parent.name == "snapshots" else snapshot_dir
    source = str(HubBundleRef(ref.repo_id, commit if _COMMIT.match(commit) else ref.revision, ref.path))
    if not (directory / "manifest.json").is_file():
        raise BundleLocationError(
            f"bundle {location!r}: {ref.repo_id} at {commit} has no manifest.json"
            f"{' under ' + repr(ref.path) if ref.path else ' at its root'}; point at the folder that holds the bundle "
            f"({_SYNTAX}) or push one with `prefill-router push --bundle DIR --repo {ref.repo_id}`")
    return ResolvedBundle(directory, files_root, source)


def transport_errors() -> tuple[type[BaseException], ...]:
    """Errors of a failed connection to the Hub: OSError (requests, offline mode) and httpx's (huggingface_hub 1.x)."""
    try:
        import httpx
    except ImportError:
        return (OSError,)
    return (OSError, httpx.HTTPError)


def _listed_files(manifest: Path) -> list[str]:
    """The file names a manifest lists (loosely read: the bundle loader validates it and names what is wrong)."""
    try:
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    return sorted(n for n in files if isinstance(n, str)) if isinstance(files, dict) else []
