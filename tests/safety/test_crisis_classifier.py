"""The fine-tuned crisis classifier: the shipped one matches its labelled sets, and retraining works."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from agents.llm.embeddings import default_model_path
from agents.text.crisis import default_detector, load_detector_settings, training_files
from agents.text.crisis_model import META_FILE, merge_lora, model_dir, read_meta, training_digest
from agents.text.crisis_training import LABELS, LORA_TARGETS, labelled_messages, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_shipped_classifier_was_trained_on_the_labelled_sets_as_they_are() -> None:
    """Editing a labelled set or the training settings without retraining fails here."""
    meta = read_meta(model_dir())
    current = training_digest(training_files(), load_detector_settings().training)
    assert meta.training_digest == current, "retrain: python -m agents.text.crisis_training"
    assert meta.labels == LABELS
    assert meta.calibration["recall"] >= 0.95, meta.calibration


def test_a_classifier_older_than_its_labelled_sets_is_served_with_a_warning(tmp_path: Path) -> None:
    shutil.copytree(CONFIGS / "safety", tmp_path / "safety")
    with open(tmp_path / "safety" / "crisis_train.yaml", "a") as f:
        f.write("\n# an edit after training\n")
    with capture_logs() as logs:
        detector = default_detector(tmp_path)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["crisis_classifier.stale"]
    assert detector.detect(["My dad collapsed and is not breathing"])[0].kind is not None


def test_a_text_labelled_two_ways_is_not_trained_on(tmp_path: Path) -> None:
    configs = _small_configs(tmp_path, per_label=3)
    texts, labels = labelled_messages(configs)
    assert len(texts) == len(labels) == len(set(texts))
    path = configs / "safety" / "crisis_train.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["messages"]["none"].append(raw["messages"]["suicide"][0].upper())  # same text once normalised
    path.write_text(yaml.safe_dump(raw))
    again, _ = labelled_messages(configs)
    assert raw["messages"]["suicide"][0] not in again and len(again) == len(texts) - 1


def test_the_served_merge_matches_peft(tmp_path: Path) -> None:
    """``merge_lora`` (no peft import at serving time) computes what a peft model computes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    path = default_model_path()
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)  # non-zero B
    trained = get_peft_model(AutoModel.from_pretrained(path, local_files_only=True), config).eval()
    trained.save_pretrained(str(tmp_path / "adapter"))
    served = AutoModel.from_pretrained(path, local_files_only=True).eval()
    merge_lora(served, tmp_path / "adapter")
    batch = AutoTokenizer.from_pretrained(path, local_files_only=True)(
        ["I gave my guitar away today.", "What is a good recipe for banana bread?"], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        expected = trained(**batch).last_hidden_state
        got = served(**batch).last_hidden_state
        plain = AutoModel.from_pretrained(path, local_files_only=True).eval()(**batch).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-2), "the adapter changed nothing: the test would prove nothing"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_training_writes_a_classifier_the_detector_serves(tmp_path: Path) -> None:
    configs = _small_configs(tmp_path, per_label=8)
    out = configs / "safety" / "crisis_model"
    (out / "adapter").mkdir(parents=True)
    (out / "left-over").write_text("from an older training")
    meta = train(configs)
    assert not (out / "left-over").exists(), "the old classifier is replaced whole"
    assert read_meta(out) == meta and (out / META_FILE).is_file()
    assert meta.training_digest == training_digest(training_files(configs), load_detector_settings(configs).training)
    assert meta.trained_on + meta.calibration["crises"] + meta.calibration["non_crises"] == len(
        labelled_messages(configs)[0]
    )
    detector = default_detector(configs)
    verdicts = detector.detect(["I'm going to kill myself tonight.", "What's a good recipe for banana bread?"])
    assert verdicts[0].kind is not None  # the pattern, whatever one epoch of eight examples learnt
    assert 0.0 <= verdicts[1].score <= 1.0
    assert not list(out.parent.glob(".crisis_model*")), "no staging folder is left behind"


def _small_configs(root: Path, *, per_label: int) -> Path:
    """A configs folder with the first few texts of every labelled file and a one-epoch recipe."""
    safety = root / "configs" / "safety"
    safety.mkdir(parents=True)
    (root / "configs" / "material").mkdir()  # no everyday situations
    for path in training_files():
        raw = yaml.safe_load(path.read_text())
        if path.name == "detector.yaml":
            raw["training"].update(epochs=1, batch_size=8, calibration_share=0.25)
        else:
            for section in ("messages", "replies"):
                for label, texts in raw[section].items():
                    if isinstance(texts, dict):
                        raw[section][label] = {k: v[:per_label] for k, v in texts.items()}
                    else:
                        raw[section][label] = texts[:per_label]
        (safety / path.name).write_text(yaml.safe_dump(raw))
    (root / "configs" / "signals.yaml").write_bytes((CONFIGS / "signals.yaml").read_bytes())
    return root / "configs"
