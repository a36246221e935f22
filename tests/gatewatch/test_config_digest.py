"""Which config changes a checkpoint records as its state being restored under new settings, and which not."""

from __future__ import annotations

from pathlib import Path

from gatewatch.checkpoint import config_digest
from gatewatch.config import parse_config


def test_revoking_a_token_keeps_the_state_a_new_threshold_does_not(tmp_path: Path) -> None:
    revoked = tmp_path / "revoked.csv"
    revoked.write_text("jti,revoked_at\nt-1,2026-12-07T10:00:00Z\n")
    before = config_digest(parse_config({"tokens": {"revoked": str(revoked)}}))
    revoked.write_text("jti,revoked_at\nt-1,2026-12-07T10:00:00Z\nt-2,2026-12-07T11:00:00Z\n")
    assert config_digest(parse_config({"tokens": {"revoked": str(revoked)}})) == before  # no state holds the list
    threshold = parse_config({"tokens": {"revoked": str(revoked)}, "detectors": {"http_4xx_burst": {"min_errors": 50}}})
    assert config_digest(threshold) != before  # the rule's state was built with the old one


def test_a_value_set_to_its_default_or_left_unset_is_the_same_config() -> None:
    """An upgrade trial: a release adding a key with a default changed the digest of an untouched config, and every
    task logged state_under_new_config. Only values set away from their defaults count."""
    assert config_digest(parse_config({})) == config_digest(
        parse_config({"correlate": {"join_window_secs": 30}, "detectors": {"http_4xx_burst": {"min_errors": 30}}})
    )
    assert config_digest(parse_config({})) != config_digest(parse_config({"correlate": {"join_window_secs": 31}}))
