"""A short `make soak` (20 s, blips of 3 s): every check it prints must pass."""

from __future__ import annotations

import pytest

from tests.soak.run import main


def test_a_short_soak_passes_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--duration", "20", "--blip", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[FAIL]" not in out and "soak: PASS" in out
