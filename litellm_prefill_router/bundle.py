"""The bundle: the artifact that training hands to the runtime.

A bundle is a directory holding ``manifest.json`` plus the files it lists (``encoder.onnx``, ``trunk.onnx``,
``tokenizer.json``, ``chat_template.jinja``, ``report.json``; ``encoder.onnx.data`` when the encoder's weights sit
beside its graph). Loading verifies the schema version, that every file stays inside the directory, and the sha256
and size of every file (a file this process already hashed, unchanged on disk since, is not read again).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import (
    BundleChecksumError,
    BundleMissingFileError,
    BundlePathError,
    BundleSchemaError,
    BundleWriteError,
)
from .hub import resolve_bundle

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REQUIRED_FILES = ("encoder.onnx", "trunk.onnx", "tokenizer.json")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileEntry(_Frozen):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class EncoderSpec(_Frozen):
    """How prompts become features: the encoder graph's contract."""

    id: str
    revision: str = "unknown"
    kind: Literal["causal", "bidirectional"] = "causal"
    layers: tuple[int, ...] = Field(min_length=1)
    pooling: tuple[Literal["mean", "last"], ...] = Field(min_length=1)
    num_hidden_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    feature_dim: int = Field(ge=1)
    max_prefill_tokens: int = Field(ge=8)
    head_fraction: float = Field(default=0.25, ge=0.0, le=1.0)
    pad_token_id: int = Field(ge=0)
    add_special_tokens: bool = False
    template_vars: dict[str, str] = Field(default_factory=dict)  # bos_token etc. for the chat template
    add_generation_prompt: bool = True
    chat_template: str | None = None  # file name inside the bundle
    system_prompt_policy: Literal["keep", "drop"] = "keep"
    quantized: bool = False


class TargetSpec(_Frozen):
    """One trunk output column: a target model whose correctness is predicted."""

    name: str = Field(min_length=1)
    expected_output_tokens: float = Field(gt=0)
    prior_accuracy: float = Field(ge=0.0, le=1.0)
    input_cost_per_token: float | None = Field(default=None, ge=0.0)
    output_cost_per_token: float | None = Field(default=None, ge=0.0)
    test_auc: float | None = None


class PolicyPreset(_Frozen):
    kind: Literal["tolerance", "lambda", "value_usd"]
    value: float = Field(ge=0.0)
    description: str = ""
    validation_accuracy: float | None = None
    validation_cost: float | None = None


class ParityRecord(_Frozen):
    encoder_max_abs_diff: float
    trunk_max_abs_diff: float
    probability_max_abs_diff: float
    tolerance: float
    prompts_checked: int


class BundleManifest(_Frozen):
    schema_version: int
    encoder: EncoderSpec
    targets: tuple[TargetSpec, ...] = Field(min_length=1)
    presets: dict[str, PolicyPreset] = Field(default_factory=dict)
    default_preset: str | None = None
    parity: ParityRecord | None = None
    creator: dict[str, str] = Field(default_factory=dict)
    files: dict[str, FileEntry]

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(
                f"unknown schema_version {v}; this litellm-prefill-router reads schema "
                f"version {SCHEMA_VERSION}. Upgrade the package or re-export the bundle."
            )
        return v

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    def target(self, name: str) -> TargetSpec:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(f"{name!r} is not a target of this bundle; targets: {self.target_names}")

    def best_prior_target(self) -> str:
        return max(self.targets, key=lambda t: t.prior_accuracy).name


class Bundle:
    """A verified bundle on disk: its directory and its manifest."""

    def __init__(self, directory: Path, manifest: BundleManifest, *, source: str | None = None,
                 files_root: Path | None = None, version: str | None = None) -> None:
        self.directory = directory
        self.manifest = manifest
        # what was loaded: the directory, or the hf:// reference with the commit served
        self.source = source if source is not None else str(directory)
        # the content's identity: the first 12 hex of the manifest's sha256 (the manifest pins every file's sha256),
        # so a bundle rewritten in place, or pushed again, is a new version only if something in it changed
        self.version = version if version is not None else \
            hashlib.sha256((directory / MANIFEST_NAME).read_bytes()).hexdigest()[:12]
        self._files_root = files_root

    def path(self, name: str) -> Path:
        return _confined(self.directory, name, self._files_root)

    def read_text(self, name: str) -> str:
        return self.path(name).read_text(encoding="utf-8")

    def report(self) -> dict:
        if "report.json" not in self.manifest.files:
            return {}
        return json.loads(self.read_text("report.json"))

    def __repr__(self) -> str:
        return f"Bundle({str(self.directory)!r}, targets={self.manifest.target_names})"


# files this process has hashed, by what identifies their content on disk (path, size, mtime in ns, inode, device) ->
# sha256: loading the same bundle again (another routing group, a LangChain runnable, a reload check) does not read
# every byte again - 1.2 s for a 2 GB encoder. A file rewritten since (new mtime or inode) is hashed again.
_VERIFIED: dict[tuple[str, int, int, int, int], str] = {}


def _verified_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = sha256_file(path)
        if len(_VERIFIED) > 4096:
            _VERIFIED.clear()
        _VERIFIED[key] = digest
    return digest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _confined(directory: Path, name: str, files_root: Path | None = None) -> Path:
    """Resolve ``name`` inside ``directory``; refuse anything that leaves it (or, for a bundle in the Hugging Face
    cache, whose files link to the repository's blobs, anything that leaves ``files_root``)."""
    if not name or os.path.isabs(name) or "\\" in name or name != os.path.normpath(name) \
            or name.startswith(".."):
        raise BundlePathError(
            f"manifest file name {name!r} in {directory} is not a plain relative path; "
            "bundle files must live directly inside the bundle directory. Re-export the bundle."
        )
    root = (files_root or directory).resolve()
    full = (directory.resolve() / name).resolve()
    if root != full.parent and root not in full.parents:
        raise BundlePathError(
            f"manifest file name {name!r} resolves to {full}, outside the bundle directory {root}; "
            "refusing to read it. Re-export the bundle."
        )
    # the path inside the bundle directory, not where a link leads: onnxruntime looks for a graph's weights file
    # (encoder.onnx.data) beside the path it is given, and in the Hugging Face cache the blobs have other names
    return directory.absolute() / name


def load_bundle(directory: str | os.PathLike[str], *, verify: bool = True) -> Bundle:
    """Load and verify a bundle: a directory, or ``hf://owner/name[@revision][/path]`` on the Hugging Face Hub
    (fetched into the Hugging Face cache first; see :mod:`litellm_prefill_router.hub`).

    Raises a subclass of :class:`BundleError` naming the file and the fix.
    """
    where = resolve_bundle(directory)
    root = where.directory
    if root.is_file():
        raise BundleMissingFileError(f"bundle {root} is a file; a bundle is the directory that holds it and its "
                                     f"siblings ({root.parent if root.name == MANIFEST_NAME else 'the bundle'})")
    if not root.is_dir():
        hint = " (a bundle on the Hugging Face Hub is named hf://owner/name[@revision][/path])" \
            if "huggingface.co" in str(directory) or str(directory).startswith(("http:", "https:")) else ""
        raise BundleMissingFileError(
            f"bundle directory {root} does not exist or is not a directory{hint}; "
            "train one with `prefill-router train --data PATH --out DIR`."
        )
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleMissingFileError(
            f"{manifest_path} is missing; a bundle directory must contain {MANIFEST_NAME}. "
            "Re-export the bundle with `prefill-router train`."
        )
    try:
        manifest_bytes = manifest_path.read_bytes()
        raw = json.loads(manifest_bytes.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleSchemaError(f"{manifest_path} is not valid JSON ({err}); re-export the bundle.") from err
    try:
        manifest = BundleManifest.model_validate(raw)
    except ValidationError as err:
        raise BundleSchemaError(f"{manifest_path} fails validation: {err}") from err
    for name in REQUIRED_FILES:
        if name not in manifest.files:
            raise BundleSchemaError(f"{manifest_path} does not list required file {name!r}; re-export the bundle.")
    tmpl = manifest.encoder.chat_template
    if tmpl is not None and tmpl not in manifest.files:
        raise BundleSchemaError(f"{manifest_path}: chat_template {tmpl!r} is not listed in files.")
    for name, entry in manifest.files.items():
        path = _confined(root, name, where.files_root)
        if not path.is_file():
            raise BundleMissingFileError(
                f"bundle file {name!r} listed in {manifest_path} is missing at {path}; " + (
                    f"the repository of {where.source} lacks it: push the whole bundle again (`prefill-router push`)."
                    if where.source.startswith("hf://") else "copy the whole bundle directory or re-export it.")
            )
        if verify:
            size = path.stat().st_size
            if size != entry.size:
                raise BundleChecksumError(
                    f"bundle file {path} has {size} bytes, the manifest says {entry.size}; "
                    "the file is truncated or was modified. Re-copy or re-export the bundle."
                )
            digest = _verified_sha256(path)
            if digest != entry.sha256:
                raise BundleChecksumError(
                    f"sha256 of bundle file {path} is {digest}, the manifest says {entry.sha256}; "
                    "the file was modified or corrupted. Re-copy or re-export the bundle."
                )
    return Bundle(root, manifest, source=where.source, files_root=where.files_root,
                  version=hashlib.sha256(manifest_bytes).hexdigest()[:12])


def write_bundle(
    out_dir: str | os.PathLike[str],
    files: dict[str, Path],
    manifest_fields: dict,
) -> Bundle:
    """Write a bundle atomically: copy files to a temp dir, add checksums, rename.

    ``files`` maps bundle file names to source paths; ``manifest_fields`` holds
    every manifest field except ``files`` and ``schema_version``.
    """
    with _staged(out_dir) as tmp:
        entries: dict[str, FileEntry] = {}
        for name, src in files.items():
            dst = _confined(tmp, name)
            shutil.copyfile(src, dst)
            entries[name] = FileEntry(sha256=sha256_file(dst), size=dst.stat().st_size)
        manifest = BundleManifest.model_validate(
            {**manifest_fields, "schema_version": SCHEMA_VERSION, "files": entries}
        )
        (tmp / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return load_bundle(Path(out_dir).expanduser().resolve())


def copy_bundle(bundle: Bundle, out_dir: str | os.PathLike[str]) -> Bundle:
    """Copy a loaded bundle (e.g. one fetched from the Hub into the Hugging Face cache, whose files are links) to a
    plain directory, atomically (a server reloading ``out_dir`` never sees half of it), and verify the copy."""
    with _staged(out_dir) as tmp:
        shutil.copyfile(bundle.directory / MANIFEST_NAME, tmp / MANIFEST_NAME)
        for name in bundle.manifest.files:
            shutil.copyfile(bundle.path(name), _confined(tmp, name))
    return load_bundle(Path(out_dir).expanduser().resolve())


def check_bundle_destination(out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir`` resolved, if a bundle may be written there: nothing there yet, an empty directory, or an earlier
    bundle (which the new one replaces). A file, or a directory holding anything else, is a :class:`BundleWriteError`
    - replacing it would delete it. Checked before any work (training takes minutes) and again when writing."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not (out.is_dir() and ((out / MANIFEST_NAME).is_file() or not any(out.iterdir()))):
        what = "a file" if not out.is_dir() else "a directory that is not a bundle (no manifest.json)"
        raise BundleWriteError(f"{out} is {what}; a bundle replaces only an earlier bundle or an empty directory - "
                               "name a new directory for it")
    return out


@contextmanager
def _staged(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp directory beside ``out_dir`` to write a bundle into; renamed to ``out_dir`` (replacing what is there)
    when the block ends, removed if it fails - so a reader never sees half a bundle."""
    out = check_bundle_destination(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            backup = out.with_name(out.name + ".old")
            if backup.exists():
                shutil.rmtree(backup)
            out.rename(backup)
            tmp.rename(out)
            shutil.rmtree(backup)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
