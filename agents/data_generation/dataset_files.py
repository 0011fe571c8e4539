"""Writing generated batches and assembling the final train/eval files, streaming."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from protocol.datasets import ConversationSample
from runtime import atomic_write

__all__ = ["assemble", "interleave", "read_jsonl", "scope_training_paths", "training_paths", "write_batch"]


def training_paths(data_dir: Path, category: str, domain: str) -> tuple[Path, Path]:
    """``data/training/{category}/{domain}_training_data.jsonl`` and its evaluation split."""
    folder = data_dir / "training" / category
    return folder / f"{domain}_training_data.jsonl", folder / f"{domain}_eval_data.jsonl"


def scope_training_paths(data_dir: Path, scope: str, target: str) -> tuple[Path, Path]:
    """A category's (``data/training/{category}/_category_*``) or the universal model's splits."""
    if scope == "category":
        return training_paths(data_dir, target, "_category")
    return training_paths(data_dir, "universal", "universal")


def read_jsonl(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line if line.endswith("\n") else line + "\n"


def write_batch(
    path: Path, samples: Iterable[ConversationSample | None], *, progress: Callable[[int], None] | None = None
) -> int:
    """Write samples as JSONL (atomically), skipping ``None`` (a generator's failed attempt).

    Returns how many were written.
    """
    n = attempts = 0
    with atomic_write(path) as f:
        for sample in samples:
            attempts += 1
            if sample is not None:
                f.write(sample.model_dump_json(exclude_none=True) + "\n")
                n += 1
            if progress is not None and attempts % 250 == 0:
                progress(attempts)
    return n


def _bucket(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def assemble(
    sources: list[Path], *, count: int, eval_fraction: float, train_path: Path, eval_path: Path
) -> tuple[int, int]:
    """Concatenate kept batches (first ``count`` samples) and split them by split key.

    Whole split keys (a topic's situation) go to evaluation, smallest hashes first, until the
    evaluation share is reached, so evaluation situations are ones training never saw.
    Returns (training samples, evaluation samples).
    """

    def first_count() -> Iterator[str]:
        taken = 0
        for source in sources:
            for line in read_jsonl(source):
                if taken == count:
                    return
                taken += 1
                yield line

    keys: Counter[str] = Counter()
    for line in first_count():
        record = json.loads(line)
        keys[record.get("split_key") or record["id"]] += 1
    total = sum(keys.values())
    held_out: set[str] = set()
    held = 0
    # At least one conversation once there is a share to hold out: a small job (10 conversations at
    # 5%) would otherwise have no evaluation set, and model QA refuses a model it cannot evaluate.
    target = max(round(total * eval_fraction), 1 if eval_fraction > 0 and total > 1 else 0)
    for key in sorted(keys, key=_bucket):
        if held >= target:
            break
        if held + keys[key] > max(target * 2, 1) and held > 0:
            continue  # a big key would overshoot; try smaller ones
        held_out.add(key)
        held += keys[key]

    n_train = n_eval = 0
    with atomic_write(train_path) as train, atomic_write(eval_path) as evaluation:
        for line in first_count():
            record = json.loads(line)
            if (record.get("split_key") or record["id"]) in held_out:
                evaluation.write(line)
                n_eval += 1
            else:
                train.write(line)
                n_train += 1
    return n_train, n_eval


def interleave(sources: dict[str, Path], dest: Path) -> dict[str, int]:
    """Merge JSONL files into ``dest`` (atomically), streaming, each spread evenly through the result.

    The next line always comes from the source furthest behind its share, so any stretch of the
    output (a training batch) holds every domain in proportion. Returns lines per source; a line
    that is not a conversation raises ``ValueError`` naming the source.
    """
    totals = {name: sum(1 for _ in read_jsonl(path)) for name, path in sources.items()}
    readers = {name: read_jsonl(path) for name, path in sources.items()}
    taken = dict.fromkeys(sources, 0)
    with atomic_write(dest) as out:
        for _ in range(sum(totals.values())):
            name = min((n for n in sources if taken[n] < totals[n]), key=lambda n: (taken[n] + 1) / totals[n])
            line = next(readers[name])
            try:
                ConversationSample.model_validate_json(line)
            except ValueError as exc:
                raise ValueError(f"{name}: line {taken[name] + 1} is not a conversation: {exc}") from None
            out.write(line)
            taken[name] += 1
    return taken
