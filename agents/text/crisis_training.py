"""Train the crisis classifier and write it to ``configs/safety/crisis_model/``.

    python -m agents.text.crisis_training [--configs DIR] [--out DIR]

LoRA on every linear layer of all-MiniLM-L6-v2's encoder and a linear head on its normalised mean
sentence vector, trained on the labelled messages (``load_training_set``) and the domains' everyday
situations as non-crises, classes weighted to count alike. A stratified share is held back to set
the crisis threshold where it catches ``target_recall`` of crises it did not train on. Minutes on
a CPU; the result is deterministic for one torch build and thread count.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from agents.llm.embeddings import default_model_path
from agents.text.crisis import (
    CRISIS_KINDS,
    TrainingSettings,
    load_detector_settings,
    load_training_set,
    ordinary_messages,
    training_files,
)
from agents.text.crisis_model import (
    ADAPTER_DIR,
    HEAD_FILE,
    CrisisModel,
    ModelMeta,
    SentenceClassifier,
    model_dir,
    training_digest,
    write_meta,
)
from agents.text.ngrams import normalise

__all__ = ["LABELS", "LORA_TARGETS", "labelled_messages", "train"]

log = structlog.get_logger(__name__)
LABELS = ["none", *CRISIS_KINDS]
LORA_TARGETS = r".*encoder\.layer\.\d+\..*(query|key|value|dense)$"
"""Every linear layer of the transformer blocks (attention and feed-forward), not the unused pooler."""


def labelled_messages(directory: Path | None = None) -> tuple[list[str], list[int]]:
    """Every training message once with its label index; a text labelled two ways is left out."""
    training = load_training_set(directory)
    pairs = [(t, LABELS.index(label)) for label, texts in training.messages.items() for t in texts]
    pairs += [(t, 0) for t in ordinary_messages(directory)]
    seen: dict[str, int] = {}
    text_of: dict[str, str] = {}
    for text, label in pairs:
        key = normalise(text)
        if key in seen and seen[key] != label:
            seen[key] = -1  # contradictory labels: neither is trusted
        else:
            seen.setdefault(key, label)
            text_of.setdefault(key, text)
    kept = [(text_of[k], label) for k, label in seen.items() if label >= 0]
    return [t for t, _ in kept], [label for _, label in kept]


def _split(labels: list[int], share: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified: the same share of every label held back."""
    rng = random.Random(seed)
    train: list[int] = []
    held: list[int] = []
    for label in sorted(set(labels)):
        rows = [i for i, lab in enumerate(labels) if lab == label]
        rng.shuffle(rows)
        cut = max(1, round(len(rows) * share))
        held += rows[:cut]
        train += rows[cut:]
    return sorted(train), sorted(held)


def _batches(rows: list[int], texts: list[str], size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths (sorted within pools of 16 batches): little padding."""
    rows = rows[:]
    rng.shuffle(rows)
    out: list[list[int]] = []
    pool = size * 16
    for start in range(0, len(rows), pool):
        chunk = sorted(rows[start : start + pool], key=lambda i: len(texts[i]))
        out += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(out)
    return out


def _calibrate(
    probabilities: np.ndarray, labels: np.ndarray, settings: TrainingSettings
) -> tuple[float, dict[str, float]]:
    crisis = labels > 0
    p_crisis = 1.0 - probabilities[:, 0]
    quantile = float(np.quantile(p_crisis[crisis], 1 - settings.target_recall))
    threshold = float(np.clip(quantile, 0.01, settings.threshold_cap))
    flagged = p_crisis >= threshold
    kind_right = probabilities[:, 1:].argmax(axis=1) + 1 == labels
    figures = {
        "crises": float(crisis.sum()),
        "non_crises": float((~crisis).sum()),
        "recall": round(float(flagged[crisis].mean()), 4),
        "false_alarms": round(float(flagged[~crisis].mean()), 4),
        "kind_accuracy": round(float(kind_right[crisis].mean()), 4),
    }
    return threshold, figures


def train(
    directory: Path | None = None, out: Path | None = None, *, progress: Callable[[int, int, float], None] | None = None
) -> ModelMeta:
    """Train on the configured sets, write adapter, head and meta into ``out`` (replaced whole;
    default: the configs folder's ``safety/crisis_model``)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    settings = load_detector_settings(directory).training
    out = out or (directory / "safety" / "crisis_model" if directory is not None else model_dir())
    texts, labels = labelled_messages(directory)
    train_rows, held_rows = _split(labels, settings.calibration_share, settings.seed)
    torch.manual_seed(settings.seed)
    base_path = default_model_path()
    tokenizer: Any = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
    base = AutoModel.from_pretrained(base_path, local_files_only=True, use_safetensors=True)
    lora = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=LORA_TARGETS,
    )
    encoder = get_peft_model(base, lora)
    head = torch.nn.Linear(base.config.hidden_size, len(LABELS))
    net = SentenceClassifier(encoder, head, settings.scale)
    counts = np.bincount([labels[i] for i in train_rows], minlength=len(LABELS)).astype(np.float64)
    weights = torch.tensor(len(train_rows) / (len(LABELS) * np.maximum(counts, 1)), dtype=torch.float32)
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.01)
    rng = random.Random(settings.seed)
    epochs = [_batches(train_rows, texts, settings.batch_size, rng) for _ in range(settings.epochs)]
    total = sum(len(e) for e in epochs)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, total // 16), total)  # type: ignore[no-untyped-call]
    target = torch.tensor(labels)
    step = 0

    def encode(rows: list[int]) -> Any:
        return tokenizer(
            [texts[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=settings.max_tokens,
            return_tensors="pt",
        )

    encoder.train()
    for batches in epochs:
        for rows in batches:
            loss: Any = torch.nn.functional.cross_entropy(net.logits(encode(rows)), target[rows], weight=weights)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if progress is not None:
                progress(step, total, loss.item())
    encoder.eval()
    with torch.inference_mode():
        held = np.concatenate(
            [
                torch.softmax(net.logits(encode(held_rows[i : i + 64])), dim=1).numpy()
                for i in range(0, len(held_rows), 64)
            ]
        )
    threshold, figures = _calibrate(held, np.array([labels[i] for i in held_rows]), settings)
    meta = ModelMeta(
        labels=LABELS,
        threshold=round(threshold, 6),
        scale=settings.scale,
        max_tokens=settings.max_tokens,
        training_digest=training_digest(training_files(directory), settings),
        trained_on=len(train_rows),
        calibration=figures,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    encoder.peft_config["default"].base_model_name_or_path = "sentence-transformers/all-MiniLM-L6-v2"
    encoder.save_pretrained(str(staging / ADAPTER_DIR), save_embedding_layers=False)  # nothing resized
    (staging / ADAPTER_DIR / "README.md").unlink(missing_ok=True)  # peft's empty model card
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(staging / HEAD_FILE))
    write_meta(staging, meta)
    for path in [staging, *staging.rglob("*")]:  # mkdtemp's 0700 would hide it from other users
        path.chmod(0o755 if path.is_dir() else 0o644)
    CrisisModel(staging, base_path)  # it loads as served before it replaces the old one
    _replace_dir(staging, out)
    return meta


def _replace_dir(new: Path, target: Path) -> None:
    """Swap a finished directory in: the old one is renamed aside first, so a crash leaves one whole."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=Path, default=None, help="a configs folder (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <configs>/safety/crisis_model)")
    args = parser.parse_args()

    def report(step: int, total: int, loss: float) -> None:
        if step % 20 == 0 or step == total:
            log.info("crisis_training.step", step=step, total=total, loss=round(loss, 4))

    meta = train(args.configs, args.out, progress=report)
    log.info("crisis_training.done", threshold=meta.threshold, trained_on=meta.trained_on, **meta.calibration)


if __name__ == "__main__":
    main()
