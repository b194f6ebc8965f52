"""Settings: defaults, CONSULT_* overrides, and errors that name the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from consult.errors import ConfigurationError
from consult.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CONSULT_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith("CONSULT_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.data_dir == Path("./consult-data")
    assert settings.ae_title == "CONSULT"
    assert settings.dicom_port == 11112
    assert settings.http_port == 8000
    assert settings.http_host == "127.0.0.1"
    assert settings.database_url == ""
    assert settings.s3_endpoint == ""
    assert settings.s3_bucket == "consult"
    assert settings.s3_region == "us-east-1"
    assert settings.stable_seconds == 60
    assert settings.accept_unknown_peers is False


def test_embedded_default_is_sqlite_and_a_folder_in_the_data_dir() -> None:
    settings = load_settings()
    expected = (Path("./consult-data") / "catalog.sqlite3").resolve()
    assert settings.catalog_url == f"sqlite:///{expected}"
    assert settings.objects_dir == Path("./consult-data") / "objects"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONSULT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CONSULT_AE_TITLE", "SECOND_OPINION")
    monkeypatch.setenv("CONSULT_DICOM_PORT", "104")
    monkeypatch.setenv("CONSULT_HTTP_PORT", "8080")
    monkeypatch.setenv("CONSULT_ACCEPT_UNKNOWN_PEERS", "true")
    monkeypatch.setenv("CONSULT_STABLE_SECONDS", "2.5")
    monkeypatch.setenv("CONSULT_DATABASE_URL", "postgresql+psycopg://u@db/consult")
    monkeypatch.setenv("CONSULT_S3_ENDPOINT", "http://minio:9000")

    settings = load_settings()

    assert settings.data_dir == tmp_path
    assert settings.ae_title == "SECOND_OPINION"
    assert (settings.dicom_port, settings.http_port) == (104, 8080)
    assert settings.accept_unknown_peers is True
    assert settings.stable_seconds == 2.5
    assert settings.catalog_url == "postgresql+psycopg://u@db/consult"
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.objects_dir == tmp_path / "objects"


def test_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSULT_DICOM_PORT", "104")
    assert load_settings(dicom_port=0).dicom_port == 0


def test_unknown_consult_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSULT_TEST_DATABASE_URL", "postgresql+psycopg://x@y/z")
    assert load_settings().database_url == ""


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONSULT_DICOM_PORT", "not-a-port"),
        ("CONSULT_DICOM_PORT", "70000"),
        ("CONSULT_HTTP_PORT", "-1"),
        ("CONSULT_STABLE_SECONDS", "-5"),
        ("CONSULT_ACCEPT_UNKNOWN_PEERS", "maybe"),
        ("CONSULT_WORKERS", "many"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        load_settings()


@pytest.mark.parametrize("ae_title", ["", "A" * 17, "ÄRZTE", "BACK\\SLASH"])
def test_bad_ae_title_refused(monkeypatch: pytest.MonkeyPatch, ae_title: str) -> None:
    monkeypatch.setenv("CONSULT_AE_TITLE", ae_title)
    with pytest.raises(ConfigurationError, match="CONSULT_AE_TITLE"):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = load_settings()
    field = "ae_title"  # through setattr: mypy with or without the pydantic plugin agrees
    with pytest.raises(ValidationError):
        setattr(settings, field, "OTHER")
    assert settings.ae_title == "CONSULT"


def test_every_setting_has_a_help_line() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"
