"""Model files load from safetensors or GGUF only: a pickled checkpoint is refused, never run."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from agents.llm.base_model import CorruptModelFile, load_base_model, resolve_base_model
from agents.testing import tiny_config

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for folder in ("agents", "runtime", "bus", "protocol", "bench") for p in (ROOT / folder).rglob("*.py")]


class _Payload:
    """Unpickling this writes a file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.marker, "unpickled"))


def test_a_folder_with_only_a_pickled_checkpoint_is_refused_without_unpickling(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    tiny_config().save_pretrained(folder)
    marker = tmp_path / "code-ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    import torch

    with pytest.raises(CorruptModelFile, match=r"cannot load base model .*model"):
        load_base_model(resolve_base_model(str(folder)), tmp_path / "cache", dtype=torch.float32)
    assert not marker.exists()


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(node: ast.expr) -> str:
    return ast.unparse(node)


def test_the_code_never_unpickles() -> None:
    """No pickle-family imports, torch.load only with weights_only=True, models from_pretrained only
    from GGUF or with use_safetensors=True."""
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                bad = [m for m in modules if m.split(".")[0] in {"pickle", "cPickle", "dill", "cloudpickle", "joblib"}]
                if bad:
                    problems.append(f"{where}:{node.lineno} imports {bad}")
        for call in _calls(tree):
            func = _name(call.func)
            keywords = {k.arg: k.value for k in call.keywords if k.arg}
            if func == "torch.load":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{where}:{call.lineno} torch.load without weights_only=True")
            if func.endswith(".from_pretrained") and "Tokenizer" not in func and "Config" not in func:
                safetensors = keywords.get("use_safetensors")
                from_gguf = "gguf_file" in keywords
                if not from_gguf and not (isinstance(safetensors, ast.Constant) and safetensors.value is True):
                    problems.append(f"{where}:{call.lineno} {func} neither from GGUF nor use_safetensors=True")
    assert problems == []
