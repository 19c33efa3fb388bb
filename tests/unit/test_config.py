import pytest

from inferno.config import AccelerateConfig, Budget, parse_budget
from inferno.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1%", Budget(max_accuracy_drop=0.01)),
        ("0.5pt", Budget(max_accuracy_drop=0.005)),
        ("0.002", Budget(max_accuracy_drop=0.002)),
        ("cosine_mean=0.995,cosine_min=0.97", Budget(min_cosine_mean=0.995, min_cosine_min=0.97)),
        ("accuracy=2%, cos_min=0.9", Budget(max_accuracy_drop=0.02, min_cosine_min=0.9)),
        ("snr=30dB", Budget(min_snr_db=30)),
        ("snr_db=25", Budget(min_snr_db=25)),
        ("SNR=42.5 dB,cosine_min=0.9", Budget(min_snr_db=42.5, min_cosine_min=0.9)),
        ("40dB", Budget(min_snr_db=40)),
        ("1%, 20db", Budget(max_accuracy_drop=0.01, min_snr_db=20)),
    ],
)
def test_parse_budget(text: str, expected: Budget) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("speed=3", "unknown key 'speed'"),
        ("lots", "expected a number"),
        ("cosine_min=0.999", "cannot exceed"),
        ("cosine_mean=7", "cosine_mean"),
        ("snr=5%", "expected decibels"),
        ("cosine_min=0.9dB", "expected a number"),
        ("snr=400dB", "min_snr_db"),
    ],
)
def test_parse_budget_errors_name_the_part(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_budget(text)


def test_threads_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERNO_THREADS", "3")
    assert AccelerateConfig().threads == 3
    monkeypatch.setenv("INFERNO_THREADS", "many")
    with pytest.raises(ConfigError, match="INFERNO_THREADS"):
        AccelerateConfig()


def test_config_is_frozen_and_validated() -> None:
    cfg = AccelerateConfig(batch_size=8)
    with pytest.raises(Exception):  # noqa: B017  (pydantic's frozen-instance error)
        cfg.batch_size = 9  # type: ignore[misc]
    with pytest.raises(Exception, match="batch_size"):
        AccelerateConfig(batch_size=0)


def test_budget_snr_default_and_description() -> None:
    assert Budget().min_snr_db == 30
    assert "SNR >= 30 dB" in Budget().describe()
