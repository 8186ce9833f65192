"""The pretrained-file resolver and the metric records.

No test touches the network: ``torch.hub.download_url_to_file`` is replaced by a function that raises URLError
(or writes a local file), and TORCH_HOME points into tmp_path. Small random files stand in for the published
weights; tests that need a file to pass verification replace the spec's sha256 by the file's actual hash.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from medsg_lib import files
from medsg_lib.files import file_sha256, read_jsonl
from medsg_lib.metrics import records, weights
from medsg_lib.metrics.weights import (
    MissingWeightsError,
    WeightsError,
    is_unverified,
    resolve_weights,
    weights_label,
)

SPEC = weights.WEIGHTS["pt_inception"]


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Empty TORCH_HOME in tmp_path, no MEDSG_WEIGHTS_DIR, downloads raise URLError; returns URLs tried."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    attempts: list[str] = []

    def no_network(url: str, dst: str, *args: object, **kwargs: object) -> None:
        attempts.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return attempts


def write_file(path: Path, content: bytes = b"not really inception") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def hub_file(tmp_path: Path, spec: weights.WeightsSpec = SPEC) -> Path:
    return tmp_path / "torch" / "hub" / "checkpoints" / spec.file_name


def accept_file(monkeypatch: pytest.MonkeyPatch, name: str, path: Path, prefix: bool = False) -> None:
    """Make ``path`` the published file of ``name`` by replacing the spec's sha256 with its actual hash."""
    actual = file_sha256(path)
    spec = dataclasses.replace(weights.WEIGHTS[name], sha256=actual[:8] if prefix else actual)
    monkeypatch.setitem(weights.WEIGHTS, name, spec)


def test_hub_dir_follows_torch_home(tmp_path: Path, offline: list[str]) -> None:
    assert weights.hub_checkpoints_dir() == tmp_path / "torch" / "hub" / "checkpoints"


def test_found_in_torch_home_and_verified(tmp_path: Path, offline: list[str], monkeypatch) -> None:
    path = write_file(hub_file(tmp_path))
    accept_file(monkeypatch, "pt_inception", path)
    assert resolve_weights("pt_inception") == path
    assert weights_label("pt_inception", path) == f"pt_inception sha256:{file_sha256(path)[:8]} (verified)"
    assert offline == []


def test_sha256_prefix_spec(tmp_path: Path, offline: list[str], monkeypatch) -> None:
    spec = weights.WEIGHTS["inception_v3_tv"]
    path = write_file(hub_file(tmp_path, spec))
    accept_file(monkeypatch, "inception_v3_tv", path, prefix=True)
    assert len(weights.WEIGHTS["inception_v3_tv"].sha256) == 8
    assert resolve_weights("inception_v3_tv") == path


def test_env_dir_comes_before_torch_home(tmp_path: Path, offline: list[str], monkeypatch) -> None:
    write_file(hub_file(tmp_path), b"the torch home copy")
    env_file = write_file(tmp_path / "mine" / SPEC.file_name, b"the env copy")
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "mine"))
    assert resolve_weights("pt_inception", verify=False) == env_file


def test_explicit_path_file_or_folder(tmp_path: Path, offline: list[str]) -> None:
    write_file(hub_file(tmp_path), b"the torch home copy")
    explicit = write_file(tmp_path / "elsewhere" / "any-name.pth")
    assert resolve_weights("pt_inception", path=explicit, verify=False) == explicit
    in_folder = write_file(tmp_path / "folder" / SPEC.file_name)
    assert resolve_weights("pt_inception", path=tmp_path / "folder", verify=False) == in_folder


def test_explicit_path_missing_is_an_error(tmp_path: Path, offline: list[str]) -> None:
    write_file(hub_file(tmp_path))
    with pytest.raises(MissingWeightsError, match="the explicit path does not exist"):
        resolve_weights("pt_inception", path=tmp_path / "typo.pth", verify=False)


def test_wrong_hash_exact_message(tmp_path: Path, offline: list[str]) -> None:
    path = write_file(hub_file(tmp_path), b"random bytes")
    actual = file_sha256(path)
    expected = (
        f"sha256 mismatch for '{SPEC.file_name}' at {path}: expected {SPEC.sha256}, got {actual}. "
        f"The file is corrupt or not the published one; delete it and fetch it again from {SPEC.url}"
    )
    with pytest.raises(WeightsError) as err:
        resolve_weights("pt_inception")
    assert str(err.value) == expected
    assert resolve_weights("pt_inception", verify=False) == path


def test_wrong_hash_prefix_message(tmp_path: Path, offline: list[str]) -> None:
    spec = weights.WEIGHTS["inception_v3_tv"]
    write_file(hub_file(tmp_path, spec))
    with pytest.raises(WeightsError, match=r"expected 0cc3c7bd \(prefix\), got [0-9a-f]{64}\."):
        resolve_weights("inception_v3_tv")


def test_missing_offline_exact_message(tmp_path: Path, offline: list[str]) -> None:
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    expected = (
        "pretrained file 'pt_inception-2015-12-05-6726825d.pth' "
        "(FID, pytorch-fid protocol (TF-Inception port)) not found "
        "(download failed: <urlopen error no network in tests>).\n"
        "Download it from https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth\n"
        "(sha256 6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2, 95,628,359 bytes) "
        f"and put it in {checkpoints}/ (torch.hub's cache, $TORCH_HOME/hub/checkpoints) "
        "or in the folder named by $MEDSG_WEIGHTS_DIR (now unset).\n"
        f"Searched: {checkpoints / SPEC.file_name}"
    )
    with pytest.raises(MissingWeightsError) as err:
        resolve_weights("pt_inception")
    assert str(err.value) == expected
    assert offline == [SPEC.url]  # tried once, through the patched function only
    assert isinstance(err.value, FileNotFoundError)


def test_download_false_never_tries(tmp_path: Path, offline: list[str], monkeypatch) -> None:
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "mine"))
    with pytest.raises(MissingWeightsError) as err:
        resolve_weights("alexnet", download=False)
    message = str(err.value)
    assert "'alexnet-owt-7be5be79.pth'" in message and "(download=False)" in message
    assert f"$MEDSG_WEIGHTS_DIR (now {tmp_path / 'mine'})" in message
    assert f"Searched: {tmp_path / 'mine' / 'alexnet-owt-7be5be79.pth'}, " in message
    assert offline == []


def test_download_true_propagates_network_error(offline: list[str]) -> None:
    with pytest.raises(urllib.error.URLError):
        resolve_weights("pt_inception", download=True)


def test_download_branch_writes_to_hub_and_verifies(tmp_path: Path, offline: list[str], monkeypatch) -> None:
    def fake_download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        Path(dst).write_bytes(b"downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        resolve_weights("pt_inception")
    assert hub_file(tmp_path).read_bytes() == b"downloaded"


def test_unknown_name() -> None:
    with pytest.raises(KeyError, match="unknown pretrained file 'vgg'; known: alexnet, inception_v3_tv"):
        resolve_weights("vgg")


def test_hash_cached_per_path_size_mtime(tmp_path: Path, monkeypatch) -> None:
    calls = []
    real_sha256 = files.file_sha256

    def counting_sha256(path: Path) -> str:
        calls.append(path)
        return real_sha256(path)

    monkeypatch.setattr(files, "file_sha256", counting_sha256)
    path = write_file(tmp_path / "f.bin", b"abc")
    first = weights.cached_sha256(path)
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    assert weights.cached_sha256(path) == first and len(calls) == 1
    write_file(path, b"abcd")  # new size (and mtime): hashed again
    assert weights.cached_sha256(path) != first and len(calls) == 2


def test_weights_label_unverified(tmp_path: Path) -> None:
    path = write_file(tmp_path / "f.bin", b"abc")
    label = weights_label("pt_inception", path)
    assert label.startswith("pt_inception sha256:ba7816bf UNVERIFIED")  # sha256("abc")
    assert weights_label("alexnet", None) == "alexnet random init (UNVERIFIED random weights)"
    assert is_unverified(label) and is_unverified(weights_label("alexnet", None))


def test_is_unverified_only_for_unverified_labels(tmp_path: Path, monkeypatch) -> None:
    path = write_file(tmp_path / "f.bin", b"abc")
    accept_file(monkeypatch, "pt_inception", path)
    assert not is_unverified(weights_label("pt_inception", path))  # "... (verified)"
    assert not is_unverified("classifier sha256:15b97fcf18bea81d")  # a domain network's provenance
    assert not is_unverified("missing: pt_inception-2015-12-05-6726825d.pth")


# records ------------------------------------------------------------------------------------------


def full_record(**extra: object) -> dict:
    base = {
        "metric": "fid",
        "protocol": "pytorch-fid",
        "feature_net": "InceptionV3",
        "weights": "pt_inception random init (UNVERIFIED random weights)",
        "class": "Normal",
        "model": "medsg",
        "checkpoint": "runs/x/ckpt-000004.pt",
        "n_real": 6,
        "n_fake": 6,
        "seed": 0,
    }
    return base | extra


def test_record_missing_keys_exact_message(tmp_path: Path) -> None:
    record = full_record()
    del record["weights"], record["seed"]
    with pytest.raises(ValueError) as err:
        records.append_record(tmp_path / "m.jsonl", record)
    assert str(err.value) == "metric record is missing required keys: weights, seed"
    assert not (tmp_path / "m.jsonl").exists()


def test_record_round_trip_with_provenance(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "metrics.jsonl"
    first = records.append_record(path, full_record(value=np.float64(12.5), n_real=np.int64(6)))
    second = records.append_record(path, full_record(metric="kid", value=0.25, std=0.01))
    back = read_jsonl(path)
    assert back == [first, second]
    assert back[0]["value"] == 12.5 and back[0]["n_real"] == 6
    assert set(back[0]["versions"]) == {"torch", "torchvision", "pytorch-fid", "lpips", "medsg"}
    assert back[0]["versions"]["pytorch-fid"] == "0.3.0" and back[0]["versions"]["lpips"] == "0.1.4"
    assert back[0]["timestamp"].endswith("+00:00")
    assert len(path.read_text().splitlines()) == 2
    assert json.loads(path.read_text().splitlines()[1])["metric"] == "kid"


def test_record_rejects_unserialisable(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="record value of type object is not JSON-serialisable"):
        records.append_record(tmp_path / "m.jsonl", full_record(value=object()))
