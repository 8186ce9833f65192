"""Finding, checking and labelling the pretrained files the metrics need.

Every metric network loads one file (see ``WEIGHTS`` and ``docs/paper.md``). :func:`resolve_weights` looks
for it in this order and returns the first hit:

1. an explicit ``path`` (a file, or a folder holding the file under its name); when given, the only place;
2. ``$MEDSG_WEIGHTS_DIR/<file name>`` (a folder you fill by hand, e.g. on an offline machine);
3. ``<torch.hub.get_dir()>/checkpoints/<file name>``, i.e. ``$TORCH_HOME/hub/checkpoints/`` (where torch.hub,
   torchvision, pytorch-fid and lpips cache downloads; default ``~/.cache/torch/hub/checkpoints``);
4. a download into that cache with :func:`torch.hub.download_url_to_file`, when allowed.

Whatever is found is checked against the published sha256 (full hash, or the 8-digit prefix torchvision puts
in its file names) unless ``verify=False``. Hashes (:func:`medsg_lib.files.file_sha256`) are cached per
``(path, size, mtime)``, so a 100 MB file is hashed once per process.

Tests write random-valued state dicts under the published file names and pass ``verify=False``; every number
computed from such a file carries the label of :func:`weights_label`, which then says :data:`UNVERIFIED`
(:func:`is_unverified`): such a number is not comparable to anything and tables must not show it as one.
"""

from __future__ import annotations

import http.client
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from medsg_lib import files

WEIGHTS_DIR_ENV = "MEDSG_WEIGHTS_DIR"
UNVERIFIED = "UNVERIFIED"  # in every weights label of random or unpublished weights (weights_label)


@dataclass(frozen=True)
class WeightsSpec:
    """One published pretrained file."""

    name: str  # our key, e.g. "pt_inception"
    file_name: str  # the name torch.hub caches it under
    num_bytes: int
    sha256: str  # full 64-hex digest, or a prefix (torchvision's file-name convention)
    url: str
    used_by: str  # what needs it, for error messages

    @property
    def is_prefix(self) -> bool:
        return len(self.sha256) < 64


WEIGHTS: dict[str, WeightsSpec] = {
    spec.name: spec
    for spec in (
        WeightsSpec(
            name="pt_inception",
            file_name="pt_inception-2015-12-05-6726825d.pth",
            num_bytes=95_628_359,
            sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
            used_by="FID, pytorch-fid protocol (TF-Inception port)",
        ),
        WeightsSpec(
            name="alexnet",
            file_name="alexnet-owt-7be5be79.pth",
            num_bytes=244_408_911,
            sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            used_by="LPIPS backbone (AlexNet, ImageNet)",
        ),
        WeightsSpec(
            name="inception_v3_tv",
            file_name="inception_v3_google-0cc3c7bd.pth",
            num_bytes=108_949_747,
            sha256="0cc3c7bd",
            url="https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
            used_by="FID, paper (StarGAN v2) protocol: torchvision ImageNet InceptionV3",
        ),
    )
}


class WeightsError(RuntimeError):
    """A pretrained file is unusable (wrong hash)."""


class MissingWeightsError(WeightsError, FileNotFoundError):
    """A pretrained file is absent and could not be downloaded."""


# (resolved path, size, mtime_ns) -> sha256 hex digest
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def get_spec(name: str) -> WeightsSpec:
    """Return the spec named ``name``; unknown names raise with the known ones."""
    if name not in WEIGHTS:
        raise KeyError(f"unknown pretrained file {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def hub_checkpoints_dir() -> Path:
    """``<torch.hub.get_dir()>/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_sha256(path: Path) -> str:
    """:func:`medsg_lib.files.file_sha256` of ``path``, computed once per ``(path, size, mtime)`` in this
    process (a weights file is hashed to verify it and again to label it)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = files.file_sha256(path)
    return _HASH_CACHE[key]


def hash_matches(spec: WeightsSpec, actual: str) -> bool:
    """True when ``actual`` (full hex digest) equals the spec's sha256 or starts with its prefix."""
    return actual.startswith(spec.sha256)


def verify_weights(spec: WeightsSpec, path: Path) -> None:
    """Raise :class:`WeightsError` naming the file, expected and actual hash when ``path`` is not the file."""
    actual = cached_sha256(path)
    if not hash_matches(spec, actual):
        expected = f"{spec.sha256} (prefix)" if spec.is_prefix else spec.sha256
        raise WeightsError(
            f"sha256 mismatch for '{spec.file_name}' at {path}: expected {expected}, got {actual}. "
            f"The file is corrupt or not the published one; delete it and fetch it again from {spec.url}"
        )


def missing_message(spec: WeightsSpec, searched: list[Path], reason: str) -> str:
    """The message of :class:`MissingWeightsError`: what to fetch, from where, and where to put it."""
    return (
        f"pretrained file '{spec.file_name}' ({spec.used_by}) not found ({reason}).\n"
        f"Download it from {spec.url}\n"
        f"(sha256 {spec.sha256}{' (prefix)' if spec.is_prefix else ''}, {spec.num_bytes:,} bytes) "
        f"and put it in {hub_checkpoints_dir()}/ (torch.hub's cache, $TORCH_HOME/hub/checkpoints) "
        f"or in the folder named by ${WEIGHTS_DIR_ENV} (now {os.environ.get(WEIGHTS_DIR_ENV) or 'unset'}).\n"
        f"Searched: {', '.join(str(p) for p in searched)}"
    )


def _candidates(spec: WeightsSpec) -> list[Path]:
    found: list[Path] = []
    env_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if env_dir:
        found.append(Path(env_dir) / spec.file_name)
    found.append(hub_checkpoints_dir() / spec.file_name)
    return found


def _download(spec: WeightsSpec) -> Path:
    target = hub_checkpoints_dir() / spec.file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    # download_url_to_file writes to a temporary file and moves it into place when complete
    torch.hub.download_url_to_file(spec.url, str(target), progress=True)
    return target


def resolve_weights(
    name: str, path: Path | None = None, download: bool | None = None, verify: bool = True
) -> Path:
    """Return the local path of the pretrained file ``name`` (a key of ``WEIGHTS``), checked.

    Args:
        name: "pt_inception", "alexnet" or "inception_v3_tv".
        path: an explicit file (or a folder holding it under its published name); when given, nothing else is
            searched and its absence is an error.
        download: False: never download. True: download when absent and let a network error propagate.
            None (default): try to download, and turn a network failure into :class:`MissingWeightsError`.
        verify: check the sha256 of the file found. False is for tests with random files only; label such
            results with :func:`weights_label`.

    Raises:
        MissingWeightsError: nowhere found and not downloadable; the message names the file, URL, sha256 and
            where to put it.
        WeightsError: the file found has the wrong sha256.
    """
    spec = get_spec(name)
    if path is not None:
        path = Path(path)
        explicit = path / spec.file_name if path.is_dir() else path
        if not explicit.is_file():
            raise MissingWeightsError(missing_message(spec, [explicit], "the explicit path does not exist"))
        if verify:
            verify_weights(spec, explicit)
        return explicit
    searched = _candidates(spec)
    found = next((p for p in searched if p.is_file()), None)
    if found is None:
        if download is False:
            raise MissingWeightsError(missing_message(spec, searched, "download=False"))
        try:
            found = _download(spec)
        except (OSError, http.client.HTTPException) as err:  # URLError and timeouts are OSErrors
            if download:
                raise
            raise MissingWeightsError(missing_message(spec, searched, f"download failed: {err}")) from err
    if verify:
        verify_weights(spec, found)
    return found


def weights_label(name: str, path: Path | None) -> str:
    """A one-line provenance label for records, e.g. ``"pt_inception sha256:6726825d (verified)"``.

    ``path=None`` means random initialisation (tests only). A file whose hash differs from the published one
    is labelled ``UNVERIFIED``: numbers computed with it are not comparable to anything.
    """
    spec = get_spec(name)
    if path is None:
        return f"{spec.name} random init ({UNVERIFIED} random weights)"
    actual = cached_sha256(Path(path))
    if hash_matches(spec, actual):
        return f"{spec.name} sha256:{actual[:8]} (verified)"
    return (
        f"{spec.name} sha256:{actual[:8]} {UNVERIFIED} (not the published file: unverified random weights?)"
    )


def is_unverified(label: str) -> bool:
    """True when a weights label (a record's ``weights``) says :data:`UNVERIFIED`: random weights or a file
    that is not the published one (:func:`weights_label`, ``MetricsConfig.allow_random_weights``)."""
    return UNVERIFIED in label
