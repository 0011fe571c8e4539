"""The embedder computes all-MiniLM-L6-v2's sentence-transformers vectors, without importing sentence-transformers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from agents.llm.embeddings import default_embedder
from agents.text.crisis import load_training_set

ODD = ["", " ", "😀 héllo wörld", "word " * 400, "A single line.\n\nAnd another after a blank one."]


def test_vectors_are_those_sentence_transformers_computes_in_any_batch_order() -> None:
    from sentence_transformers import SentenceTransformer

    training = load_training_set()
    texts = [t for texts in training.messages.values() for t in texts][:300] + ODD
    embedder = default_embedder()
    ours = embedder.encode(texts)
    reference = SentenceTransformer(embedder.identity.split("|")[0], device="cpu", local_files_only=True)
    reference.max_seq_length = 128
    theirs = reference.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    assert ours.shape == (len(texts), 384) and ours.dtype == np.float32
    assert float(np.abs(ours - theirs).max()) < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # One at a time, or reversed, the same rows: padding and length-sorted batches change nothing.
    assert np.allclose(embedder.encode(texts[::-1])[::-1], ours, atol=1e-5)
    assert np.allclose(embedder.encode(texts[-3:-2]), ours[-3:-2], atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_an_agent_process_embeds_without_importing_sentence_transformers() -> None:
    code = (
        "import sys; from agents.llm.embeddings import default_embedder; default_embedder().encode(['hi']); "
        "print(sorted(m for m in ('sentence_transformers', 'peft', 'bitsandbytes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
