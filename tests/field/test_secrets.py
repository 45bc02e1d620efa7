"""Meter passwords from the secrets file and the environment; never shown by repr or str."""

from __future__ import annotations

from pathlib import Path

import pytest

from headend.secrets import MeterSecrets, SecretsError


def test_file_entries_override_the_default_and_nothing_is_shown(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HEADEND_METER_PASSWORD", raising=False)
    path = tmp_path / "secrets.toml"
    path.write_text(
        '[default]\npassword = "314159"\n[meters."000012345678"]\npassword_level = 4\npassword = "271828"\n'
    )
    secrets = MeterSecrets.load(path)
    assert secrets.credentials_for("000012345678").level == 4
    assert secrets.credentials_for("000012345678").password == "271828"
    assert secrets.credentials_for("000000000001").password == "314159"
    shown = repr(secrets) + repr(secrets.credentials_for("000012345678")) + str(secrets.credentials_for("1"))
    assert "271828" not in shown and "314159" not in shown


def test_environment_and_file_from_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HEADEND_METER_PASSWORD", "123456")
    monkeypatch.setenv("HEADEND_METER_PASSWORD_LEVEL", "4")
    monkeypatch.delenv("HEADEND_SECRETS_FILE", raising=False)
    assert MeterSecrets.load().credentials_for("x").level == 4
    path = tmp_path / "s.toml"
    path.write_text('[meters."1"]\npassword = "654321"\n')
    monkeypatch.setenv("HEADEND_SECRETS_FILE", str(path))
    loaded = MeterSecrets.load()
    assert (
        loaded.credentials_for("1").password == "654321" and loaded.credentials_for("2").password == "123456"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[default]\npassword = 12\n", "password must be 6 digits"),
        ("[default]\nlevel = 2\n", "needs password"),
        ("[default\n", "not valid TOML"),
    ],
)
def test_bad_secrets_files_get_precise_errors_without_the_secret(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SecretsError, match=message) as info:
        MeterSecrets.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(SecretsError, match="cannot read secrets file"):
        MeterSecrets.load(tmp_path / "missing.toml")
