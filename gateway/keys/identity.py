"""Who a request belongs to, as authentication found it: the facts limits and the ledger need, nothing secret."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.decisions.limits import Budget

DEFAULT_TEAM = "default"


@dataclass(frozen=True, slots=True)
class Identity:
    team: str
    key_id: str | None = None  # None: no gateway key (require_api_key false)
    key_budget: Budget | None = None
    team_budget: Budget | None = None
    rpm: int | None = None
    tpm: int | None = None


ANONYMOUS = Identity(team=DEFAULT_TEAM)
