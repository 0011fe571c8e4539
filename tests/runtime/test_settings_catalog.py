"""Settings precedence and validation; the domain catalogue as MISSION.md defines it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from protocol import InvalidParams
from runtime import CatalogError, Settings, load_catalog


def test_settings_precedence_kwargs_over_env_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "meetara.yaml"
    config.write_text("bus_url: redis://from-yaml:6379/0\nlog_level: debug\nbus:\n  max_deliveries: 9\n")
    monkeypatch.setenv("MEETARA_BUS_URL", "redis://from-env:6379/0")
    monkeypatch.setenv("MEETARA_BUS__NAMESPACE", "envns")
    s = Settings.load(config)
    assert s.bus_url == "redis://from-env:6379/0"
    assert s.log_level == "debug"
    assert s.bus.namespace == "envns"
    assert Settings.load(config, bus_url="memory://x").bus_url == "memory://x"
    monkeypatch.setenv("MEETARA_CONFIG", str(config))
    monkeypatch.delenv("MEETARA_BUS_URL")
    assert Settings.load().bus_url == "redis://from-yaml:6379/0"


def test_settings_reject_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("bus_urll: redis://typo\n")
    with pytest.raises(ValidationError, match="bus_urll"):
        Settings.load(config)
    with pytest.raises(ValidationError, match="heartbeat_ms"):
        Settings.load(bus={"heartbeat_ms": 20_000, "reclaim_idle_ms": 30_000})
    with pytest.raises(FileNotFoundError, match="settings file not found"):
        Settings.load(tmp_path / "missing.yaml")


def test_instance_ids_are_unique_per_settings_object() -> None:
    assert Settings.load().instance_id != Settings.load().instance_id


EXPECTED_COUNTS = {
    "healthcare": 12,
    "daily_life": 12,
    "business": 12,
    "education": 8,
    "creative": 8,
    "technology": 6,
    "specialized": 4,
}
EXPECTED_TARGETS = {
    "healthcare": 99.5,
    "specialized": 99.0,
    "business": 98.5,
    "education": 98.0,
    "technology": 97.5,
    "creative": 95.0,
    "daily_life": 95.0,
}


def test_catalogue_has_62_domains_in_7_categories() -> None:
    catalog = load_catalog()
    assert {name: len(c.domains) for name, c in catalog.categories.items()} == EXPECTED_COUNTS
    assert len(catalog.domains) == 62
    assert {name: c.quality_target for name, c in catalog.categories.items()} == EXPECTED_TARGETS
    assert catalog.domain("mental_health").crisis_safety
    assert not catalog.domain("programming").crisis_safety
    assert all(d.description for d in catalog.domains.values())


def test_catalogue_carries_the_mission_prices_tiers_and_budgets() -> None:
    catalog = load_catalog()
    colab = catalog.providers["colab_pro_plus"]
    assert colab.prices == {"T4": 0.35, "V100": 2.48, "A100": 3.67}
    assert colab.max_session_hours == 12 and not colab.spot
    assert catalog.providers["vast_ai"].max_session_hours == 48
    assert (catalog.budgets.day, catalog.budgets.week, catalog.budgets.month) == (5.0, 25.0, 50.0)
    assert catalog.budgets.alert_thresholds == (0.5, 0.8, 0.9, 0.95)
    assert set(catalog.tiers) == {"lightning", "fast", "balanced", "quality"}
    assert catalog.training.lora_r == 8 and catalog.training.learning_rate == 1e-4
    # Packed row length: the original's 64 tokens would cut nearly every conversation (median ~257).
    assert catalog.training.sequence_length == 512 and catalog.training.quantization == "Q4_K_M"
    assert catalog.tier("quality").max_steps == 846


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.domain("mental_helth"), "unknown domain 'mental_helth'; did you mean 'mental_health'"),
        (lambda c: c.category("health"), "unknown category 'health'; did you mean 'healthcare'"),
        (lambda c: c.tier("turbo"), "unknown tier 'turbo'"),
    ],
)
def test_unknown_names_get_did_you_mean(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidParams, match=message):
        call(load_catalog())


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        (
            "budgets.yaml",
            "budgets: {day: 5, week: 25}\nalert_thresholds: [0.5]\nstop_threshold: 0.95\n",
            "missing budgets",
        ),
        (
            "budgets.yaml",
            "budgets: {day: 5, week: 25, month: 50}\nalert_thresholds: [0.9, 0.5]\nstop_threshold: 0.95\n",
            "strictly increasing",
        ),
        (
            "providers.yaml",
            "gpus: {T4: {memory_gb: 16, peak_tflops: 65}, V100: {memory_gb: 16, peak_tflops: 125}, "
            "A100: {memory_gb: 40, peak_tflops: 312}, "
            "RTX_4090: {memory_gb: 24, peak_tflops: 165}}\nproviders:\n  x: {display_name: X, spot: true, "
            "prices: {Z80: 1.0}}\nlocal: {}\n",
            "prices unknown GPUs",
        ),
        (
            "domains.yaml",
            "categories:\n"
            "  a: {quality_target: 90, domains: {x: {description: about x things, scope: x and more}}}\n"
            "  b: {quality_target: 90, domains: {x: {description: about x things, scope: x and more}}}\n",
            "listed in both",
        ),
        ("tiers.yaml", "tiers: [not, a, mapping", "not valid YAML"),
    ],
)
def test_broken_config_files_name_themselves(tmp_path: Path, filename: str, content: str, message: str) -> None:
    (tmp_path / filename).write_text(content)
    with pytest.raises(CatalogError, match=message):
        load_catalog(tmp_path)


def test_config_dir_overrides_only_the_files_it_has(tmp_path: Path) -> None:
    (tmp_path / "budgets.yaml").write_text(
        "budgets: {day: 1, week: 2, month: 3}\nalert_thresholds: [0.5]\nstop_threshold: 0.9\n"
    )
    catalog = load_catalog(tmp_path)
    assert catalog.budgets.day == 1
    assert len(catalog.domains) == 62
