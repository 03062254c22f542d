"""DISPATCH_UNSUBSCRIBE_PREVIOUS_SECRETS (D7): the secrets used before a rotation, read by
dispatch serve, never shown."""

from __future__ import annotations

import pytest

from dispatch.settings import Settings, unknown_settings

CURRENT = "current-secret-0123456789-abcdefghijklmnop"


@pytest.mark.parametrize(
    ("raw", "secrets"),
    [
        ("", ()),
        ("  ", ()),
        ("first-0123456789", ("first-0123456789",)),
        ("a-0123456789, b-0123456789", ("a-0123456789", "b-0123456789")),
        ("a-0123456789 b-0123456789\tc-0123456789,", ("a-0123456789", "b-0123456789", "c-0123456789")),
    ],
)
def test_previous_secrets_are_separated_by_commas_or_spaces(raw: str, secrets: tuple[str, ...]) -> None:
    settings = Settings.from_mapping(
        {"DISPATCH_UNSUBSCRIBE_SECRET": CURRENT, "DISPATCH_UNSUBSCRIBE_PREVIOUS_SECRETS": raw}
    )
    assert settings.unsubscribe_previous_secrets == secrets
    for secret in (CURRENT, *secrets):
        assert secret not in repr(settings)


def test_the_setting_is_known() -> None:
    assert unknown_settings(["DISPATCH_UNSUBSCRIBE_PREVIOUS_SECRETS"]) == []
