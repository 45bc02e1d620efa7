"""The concentrator PW in the secrets file: parsed by address, validated, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from headend.secrets import MeterSecrets, SecretsError

PW = "00112233445566778899AABBCCDDEEFF"


def test_pw_by_concentrator_with_a_default_and_never_in_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEADEND_CONCENTRATOR_PW", raising=False)
    path = tmp_path / "secrets.toml"
    path.write_text(f'[concentrators."03146332"]\npw = "{PW}"\n[concentrators.default]\npw = "{"0" * 31}1"\n')
    secrets = MeterSecrets.load(path)
    assert secrets.concentrator_pw("0314-25394") == bytes.fromhex(PW)  # 03146332 is 0314-25394
    assert secrets.concentrator_pw("0314-1") == bytes(15) + b"\x01"
    assert PW not in repr(secrets) and PW.lower() not in repr(secrets)
    monkeypatch.setenv("HEADEND_CONCENTRATOR_PW", PW)
    assert MeterSecrets.load(None).concentrator_pw("0101-7") == bytes.fromhex(PW)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (
            '[concentrators."0314-25394"]\npw = "1234"\n',
            "[concentrators.0314-25394]: pw must be 32 hex digits",
        ),
        (
            '[concentrators."0314-25394"]\npassword = "x"\n',
            "[concentrators.0314-25394]: needs pw (32 hex digits)",
        ),
        (f'[concentrators."x-1"]\npw = "{PW}"\n', "[concentrators.x-1]: not a concentrator address"),
    ],
)
def test_a_bad_entry_is_one_line_without_the_secret(tmp_path: Path, entry: str, reason: str) -> None:
    path = tmp_path / "secrets.toml"
    path.write_text(entry)
    with pytest.raises(SecretsError) as error:
        MeterSecrets.load(path)
    assert str(error.value).startswith(f"{path}: {reason}") and "\n" not in str(error.value)
    assert "1234" not in str(error.value).replace(str(path), "")
