from __future__ import annotations

import json
from pathlib import Path

import pytest

from litellm_prefill_router import (
    BundleChecksumError,
    BundleMissingFileError,
    BundlePathError,
    BundleSchemaError,
    load_bundle,
)


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _write(d: Path, m: dict) -> None:
    (d / "manifest.json").write_text(json.dumps(m))


def test_trained_bundle_loads_and_lists_every_file_with_checksums(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    assert {"encoder.onnx", "trunk.onnx", "tokenizer.json", "chat_template.jinja", "report.json"} <= set(
        b.manifest.files)
    assert b.manifest.target_names == ["generalist", "history-model", "math-model"]
    assert b.manifest.parity is not None and b.manifest.parity.probability_max_abs_diff <= b.manifest.parity.tolerance


def _flip_a_byte(path: Path, offset: int = 100) -> None:
    """Modify ``path`` in place, keeping its size."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_modified_file_fails_with_checksum_error_naming_the_file(bundle_copy: Path) -> None:
    _flip_a_byte(bundle_copy / "trunk.onnx")
    with pytest.raises(BundleChecksumError, match="sha256 of bundle file .*trunk.onnx"):
        load_bundle(bundle_copy)


def test_a_bundle_loaded_again_is_not_hashed_again_unless_a_file_changed_on_disk(
        bundle_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from litellm_prefill_router import bundle as bundle_module

    load_bundle(bundle_copy)
    hashed: list[str] = []
    real = bundle_module.sha256_file
    monkeypatch.setattr(bundle_module, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    load_bundle(bundle_copy)
    assert hashed == []  # every file as this process verified it: same size, mtime and inode
    _flip_a_byte(bundle_copy / "trunk.onnx")  # modified in place, same size
    with pytest.raises(BundleChecksumError, match="sha256 of bundle file .*trunk.onnx"):
        load_bundle(bundle_copy)
    assert hashed == ["trunk.onnx"]


def test_truncated_file_fails_with_size_mismatch(bundle_copy: Path) -> None:
    data = (bundle_copy / "tokenizer.json").read_bytes()
    (bundle_copy / "tokenizer.json").write_bytes(data[:-10])
    with pytest.raises(BundleChecksumError, match="tokenizer.json.*bytes"):
        load_bundle(bundle_copy)


def test_missing_file_fails_naming_the_file(bundle_copy: Path) -> None:
    (bundle_copy / "encoder.onnx").unlink()
    with pytest.raises(BundleMissingFileError, match="encoder.onnx"):
        load_bundle(bundle_copy)


def test_missing_manifest_and_missing_directory_fail_clearly(bundle_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleMissingFileError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleMissingFileError, match="manifest.json"):
        load_bundle(bundle_copy)


def test_unknown_schema_version_is_rejected_with_upgrade_hint(bundle_copy: Path) -> None:
    m = _manifest(bundle_copy)
    m["schema_version"] = 99
    _write(bundle_copy, m)
    with pytest.raises(BundleSchemaError, match="schema_version 99.*Upgrade"):
        load_bundle(bundle_copy)


def test_unknown_manifest_field_is_rejected(bundle_copy: Path) -> None:
    m = _manifest(bundle_copy)
    m["surprise"] = True
    _write(bundle_copy, m)
    with pytest.raises(BundleSchemaError, match="surprise"):
        load_bundle(bundle_copy)


def test_invalid_json_manifest_is_a_schema_error(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleSchemaError, match="not valid JSON"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "sub/../../x", "..\\x"])
def test_path_traversal_in_manifest_is_refused(bundle_copy: Path, name: str) -> None:
    m = _manifest(bundle_copy)
    m["files"][name] = m["files"]["trunk.onnx"]
    _write(bundle_copy, m)
    with pytest.raises(BundlePathError):
        load_bundle(bundle_copy)


def test_symlink_leaving_the_bundle_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (bundle_copy / "report.json").unlink()
    (bundle_copy / "report.json").symlink_to(outside)
    with pytest.raises(BundlePathError, match="outside the bundle"):
        load_bundle(bundle_copy)


def test_a_bundle_is_written_only_where_nothing_but_an_earlier_bundle_would_be_replaced(bundle_dir: Path,
                                                                                       tmp_path: Path) -> None:
    from litellm_prefill_router import BundleWriteError
    from litellm_prefill_router.bundle import copy_bundle
    from litellm_prefill_router.cli import main

    src = load_bundle(bundle_dir)
    project = tmp_path / "project"  # e.g. `pull --out .` in a working directory: it was renamed away and deleted
    project.mkdir()
    (project / "notes.txt").write_text("keep me")
    a_file = tmp_path / "bundle.tar"
    a_file.write_text("not a directory")
    for out, said in ((project, "a directory that is not a bundle"), (a_file, "is a file")):
        with pytest.raises(BundleWriteError, match=said):
            copy_bundle(src, out)
        assert main(["pull", "--bundle", str(bundle_dir), "--out", str(out)]) == 2
    assert (project / "notes.txt").read_text() == "keep me" and a_file.read_text() == "not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar", "project"]  # no .old, no temp directory left
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty", tmp_path / "new"):  # new, empty, then an earlier bundle
        assert copy_bundle(src, out).manifest == src.manifest
