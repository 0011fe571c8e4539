"""Resolving and loading a base model: a GGUF file, a local Hugging Face folder or a hub id."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from agents.llm.architectures import ARCHITECTURES, UnsupportedArchitecture, architecture_of
from agents.llm.default_base import default_base_gguf
from agents.llm.pre_tokenizer import llama_cpp_pre_tokenizer, sentencepiece_space_prefix
from protocol import InvalidParams
from runtime import ToolError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BaseModelSource",
    "base_gguf",
    "check_base_architecture",
    "CorruptModelFile",
    "GgufHeader",
    "file_sha256",
    "gguf_header",
    "load_base_model",
    "load_tokenizer",
    "resolve_base_model",
]

GGUF_MAGIC = b"GGUF"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


class CorruptModelFile(ToolError):
    """A model file exists but cannot be read as what it claims to be (retrying cannot fix it)."""


@dataclass(frozen=True, slots=True)
class BaseModelSource:
    """Where a base model comes from.

    ``gguf``: a GGUF file (transformers dequantizes it to float on load);
    ``folder``: a local Hugging Face model folder (safetensors only);
    ``hub``: a hub id, for users whose machines reach a hub.
    """

    kind: Literal["gguf", "folder", "hub"]
    location: str
    name: str

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.location) if self.kind == "gguf" else None

    def identity(self) -> str:
        """sha256 of a GGUF file; the location otherwise (folders and hub ids are named, not hashed)."""
        return file_sha256(Path(self.location)) if self.kind == "gguf" else self.location


def resolve_base_model(source: str | None) -> BaseModelSource:
    """``None`` → the pip-shipped SmolLM2-135M-Instruct GGUF; a ``.gguf`` path; a folder; a hub id.

    Raises:
        InvalidParams: the path does not exist, or a GGUF file does not start with the GGUF magic.
    """
    if source is None or source == "default":
        path = default_base_gguf()
        return BaseModelSource(kind="gguf", location=str(path), name=path.stem)
    if "\x00" in source:
        raise InvalidParams("base model path contains a NUL byte")
    path = Path(source).expanduser()
    if source.endswith(".gguf"):
        if not path.is_file():
            raise InvalidParams(f"base model GGUF file not found: {path}")
        with open(path, "rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise InvalidParams(f"base model file is not GGUF (bad magic): {path}")
        return BaseModelSource(kind="gguf", location=str(path.resolve()), name=path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidParams(f"base model folder has no config.json: {path}")
        return BaseModelSource(kind="folder", location=str(path.resolve()), name=path.name)
    if not _HUB_ID.fullmatch(source):
        raise InvalidParams(f"base model not found: {source} (not a .gguf file, a model folder or a hub id)")
    return BaseModelSource(kind="hub", location=source, name=source.rsplit("/", 1)[-1])


_sha_cache: dict[tuple[str, int, int], str] = {}
_sha_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, remembered per (path, size, mtime) so big base files hash once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _sha_lock:
        if key in _sha_cache:
            return _sha_cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    with _sha_lock:
        _sha_cache[key] = digest.hexdigest()
    return _sha_cache[key]


def _converted_folder(base: BaseModelSource, cache_dir: Path) -> Path:
    """A safetensors copy of a GGUF base, made once: dequantizing a GGUF on every load is slow."""
    assert base.gguf_path is not None
    target = cache_dir / file_sha256(base.gguf_path)[:24]
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(base.gguf_path.parent), base.gguf_path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise CorruptModelFile(f"cannot load base model {base.gguf_path}: {exc}") from exc
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".convert-"))
    try:
        _save_plain(model, tmp)
        tokenizer.save_pretrained(tmp)
        with contextlib.suppress(FileExistsError, OSError):
            os.rename(tmp, target)  # a concurrent converter may have won; its copy is as good
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _save_plain(model: PreTrainedModel, folder: Path) -> None:
    """Save a GGUF-loaded (already dequantized) model as an ordinary float safetensors folder.

    transformers refuses ``save_pretrained`` on models it loaded from GGUF, so the config is
    saved without its GGUF quantization entry and the weights with safetensors directly.
    """
    from safetensors.torch import save_file

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # shared with the embedding; safetensors stores it once
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"}
    )


def _source(base: BaseModelSource, cache_dir: Path) -> str:
    """The folder transformers loads: a hub id's snapshot in the local cache, so nothing is fetched
    (given an id, transformers asks the hub for every optional file it does not find)."""
    return str(_converted_folder(base, cache_dir) if base.kind == "gguf" else _folder_of(base))


def load_tokenizer(base: BaseModelSource, cache_dir: Path) -> PreTrainedTokenizerBase:
    """The base model's tokenizer (with its chat template)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_source(base, cache_dir), trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidParams(f"base model {base.name} has no chat template; an instruct model is required")
    return tokenizer


def load_base_model(
    base: BaseModelSource, cache_dir: Path, *, dtype: torch.dtype, device: str = "cpu", four_bit: bool = False
) -> PreTrainedModel:
    """The base model as a transformers causal LM, weights in ``dtype`` on ``device``.

    ``four_bit``: its decoder's linear layers quantized to NF4 as they load (QLoRA's base; bitsandbytes),
    computing in ``dtype``; embeddings, norms and head stay in ``dtype``.
    """
    from transformers import AutoModelForCausalLM

    quantized = {"quantization_config": _nf4_config(dtype), "device_map": {"": device}} if four_bit else {}
    try:
        # safetensors only, from a folder or a hub: a pickled checkpoint could run code on load.
        model = AutoModelForCausalLM.from_pretrained(
            _source(base, cache_dir), dtype=dtype, trust_remote_code=False, use_safetensors=True, **quantized
        )
    except (ValueError, OSError, RuntimeError) as exc:
        raise CorruptModelFile(f"cannot load base model {base.location}: {exc}") from exc
    architecture_of(model.config)
    if not four_bit:  # a quantized model is placed by device_map as it loads
        model.to(device)  # type: ignore[arg-type]  # transformers types .to() narrowly
    return cast("PreTrainedModel", model)


def _nf4_config(compute_dtype: torch.dtype) -> object:
    """QLoRA's quantization: NF4 with double-quantized block scales (the QLoRA paper's settings)."""
    import importlib.util

    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ToolError("QLoRA needs bitsandbytes: install this project with its 'qlora' extra")
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


@dataclass(frozen=True, slots=True)
class GgufHeader:
    """What planning needs from a GGUF file's header: its architecture and hyperparameters."""

    architecture: str | None
    values: dict[str, int | float | str]
    """Scalar fields (``llama.block_count``…); arrays are left out."""
    vocab: int
    """Tokens in its tokenizer."""
    has_output: bool
    """Whether it has an output head of its own (untied embeddings)."""

    def shape_value(self, key: str) -> int | None:
        value = self.values.get(f"{self.architecture}.{key}")
        return int(value) if isinstance(value, (int, float)) else None


_header_cache: dict[tuple[str, int, int], GgufHeader] = {}


def gguf_header(path: Path) -> GgufHeader:
    """A GGUF file's header, remembered per (path, size, mtime): jobs ask about the same base again and again."""
    from agents.llm.gguf_fields import read_gguf

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _header_cache:
        try:
            contents = read_gguf(path)
        except (ValueError, OSError) as exc:
            raise CorruptModelFile(f"cannot read base model {path}: {exc}") from exc
        values: dict[str, int | float | str] = {
            name: field.value for name, field in contents.fields.items() if field.sub_type is None
        }
        tokens = contents.value("tokenizer.ggml.tokens")
        _header_cache[key] = GgufHeader(
            architecture=str(values["general.architecture"]) if "general.architecture" in values else None,
            values=values,
            vocab=len(tokens) if tokens is not None else 0,
            has_output=any(t.name == "output.weight" for t in contents.tensors),
        )
    return _header_cache[key]


def check_base_architecture(base: BaseModelSource) -> str:
    """The base's architecture, read from its header or config alone (no weights loaded).

    Raises:
        UnsupportedArchitecture: not in the architecture table (the message lists what is).
        InvalidParams: the header or config cannot be read (a hub id not in the local cache).
    """
    if base.gguf_path is not None:
        name = gguf_header(base.gguf_path).architecture
        if not any(arch.gguf_name == name for arch in ARCHITECTURES.values()):
            raise UnsupportedArchitecture(
                f"base model {base.name} is a {name!r} GGUF; supported: {', '.join(sorted(ARCHITECTURES))}"
            )
        return str(name)
    from transformers import AutoConfig

    folder = _folder_of(base)
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError) as exc:
        raise InvalidParams(f"cannot read the config of base model {base.location}: {exc}") from exc
    model_type = architecture_of(config).model_type
    _check_exportable_tokenizer(base, folder)
    _check_weights(base, folder)
    return model_type


def _check_weights(base: BaseModelSource, folder: Path) -> None:
    """Safetensors weights, every shard present: a cache holding only an interrupted download, or
    only what AutoConfig and AutoTokenizer fetched, is not a base."""
    import json

    if (folder / "model.safetensors").is_file():
        return
    index = folder / "model.safetensors.index.json"
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InvalidParams(
            f"base model {base.name} has no safetensors weights (model.safetensors or an index of shards) at "
            f"{folder}: a partial download, or pickled weights only (not loaded: they could run code)"
        ) from None
    if missing := sorted(s for s in shards if not (folder / s).is_file()):
        raise InvalidParams(f"base model {base.name} lacks {len(missing)} weight shard(s) at {folder}: {missing[0]}, …")


def _check_exportable_tokenizer(base: BaseModelSource, folder: Path) -> None:
    """The merged GGUF carries the base's tokenizer: SentencePiece BPE, or byte-level BPE whose split llama.cpp has."""
    import json

    path = folder / "tokenizer.json"
    try:
        spec = json.loads(path.read_text())
        kind = spec["model"]["type"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidParams(f"base model {base.name} has no readable tokenizer.json: {exc}") from exc
    if kind != "BPE":
        raise UnsupportedArchitecture(
            f"base model {base.name} has a {kind} tokenizer, which cannot be exported to GGUF yet; "
            "give the base as a .gguf file (its tokenizer is then copied as it is)"
        )
    if sentencepiece_space_prefix(spec) is None:  # byte-level BPE: llama.cpp must name its split
        llama_cpp_pre_tokenizer(spec)


def _folder_of(base: BaseModelSource) -> Path:
    """A folder or hub base's files on this machine (hub ids from the local cache only)."""
    if base.kind == "folder":
        return Path(base.location)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(base.location, local_files_only=True))
    except (ValueError, OSError) as exc:
        raise InvalidParams(f"base model {base.location} is not in the local Hugging Face cache: {exc}") from exc


def base_gguf(base: BaseModelSource, cache_dir: Path) -> Path:
    """The base model as a GGUF file llama.cpp can run: the file itself, or an F16 conversion made once.

    A folder or hub base is converted with the same writer as the merged model (tokenizer from its
    Hugging Face tokenizer) and cached under a key of its files' names, sizes and times, so a
    changed base is converted again and an unchanged one never is.
    """
    if base.gguf_path is not None:
        return base.gguf_path
    import json

    import torch

    from agents.llm.model_gguf import write_model_gguf
    from agents.llm.tokenizer_gguf import tokenizer_metadata_from_hf

    folder = _folder_of(base)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    stamp = json.dumps([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])
    key = hashlib.sha256(f"{folder.resolve()}\n{stamp}".encode()).hexdigest()[:24]
    target = cache_dir / "base-gguf" / f"{key}.gguf"
    if target.is_file():
        return target
    model = load_base_model(base, cache_dir, dtype=torch.float32)
    tokenizer = tokenizer_metadata_from_hf(load_tokenizer(base, cache_dir))
    target.parent.mkdir(parents=True, exist_ok=True)
    write_model_gguf(model.state_dict(), model.config, tokenizer, target, name=base.name, dtype="F16")
    return target
