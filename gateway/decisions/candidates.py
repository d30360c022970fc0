"""What the router decides, as values: ranked `Candidate`s and `Exclusion`s, together a `Decision`.

These are immutable, but built without `__init__` on the hot path (gateway/decisions/routing.py writes their slots
through the setters below) and compute what the pipeline rarely reads (Decimal costs, exclusion texts) when first
read.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from decimal import Decimal
from typing import Any, Callable

from gateway.domain import Deployment, UnitPrices
from gateway.money import EXACT

# Exclusion reasons, in the order they are checked (the first that applies is reported).
MODE = "mode"
PROVIDER_NOT_ALLOWED = "provider_not_allowed"
CONTEXT_LENGTH = "context_length"
MAX_OUTPUT = "max_output_tokens"
MIN_CONTEXT = "min_context"
QUALITY = "quality"
CAPABILITY = "capability"
NO_PRICE = "no_price"
COOLING_DOWN = "cooling_down"
MAX_COST = "max_cost"

_D = Decimal
_ZERO = Decimal(0)
_ONE = Decimal(1)


def _setter(cls: type, name: str) -> Callable[[object, Any], None]:
    """The slot's own setter: how the router fills its immutable objects without a Python-level __init__."""
    setter: Callable[[object, Any], None] = getattr(cls, name).__set__
    return setter


class _Frozen:
    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


class Candidate(_Frozen):
    """An eligible deployment: its expected cost (reporting currency), the unit prices in force, recent latency.

    Immutable, equal and hashable by those four values (as the dataclass it was). A decision makes one per eligible
    deployment while the pipeline only reads the first few, and their expected cost only in explanations: so the
    router fills one slot with (row, latency, (prompt, output tokens)), where row is (deployment, unit prices, A, B,
    1EX) of the plan (see price_index), and the cost, exactly the Decimal `expected_cost()` gives, is computed in
    the exact context when first read (the router only does so when P * A + E * B fits the caller's precision).
    """

    __slots__ = ("_f", "_cost")
    _f: tuple[Any, ...]
    _cost: Decimal

    def __init__(self, deployment: Deployment, expected_cost: Decimal, unit_prices: UnitPrices,
                 recent_latency_s: float | None, expected_cached_tokens: int = 0,
                 expected_cache_write_tokens: int = 0, cold_cost: Decimal | None = None) -> None:
        f: tuple[Any, ...] = ((deployment, unit_prices, 0, 0, _ONE), recent_latency_s, (0, 0))
        if expected_cached_tokens or expected_cache_write_tokens:
            f += ((expected_cached_tokens, expected_cache_write_tokens), cold_cost)
        _SET_F(self, f)
        _SET_COST(self, expected_cost)

    @property
    def deployment(self) -> Deployment:
        d: Deployment = self._f[0][0]
        return d

    @property
    def unit_prices(self) -> UnitPrices:
        up: UnitPrices = self._f[0][1]
        return up

    @property
    def recent_latency_s(self) -> float | None:
        lat: float | None = self._f[1]
        return lat

    @property
    def expected_cost(self) -> Decimal:
        try:
            return self._cost
        except AttributeError:
            cost = _list_cost(self._f)
            _SET_COST(self, cost)
            return cost

    @property
    def expected_cached_tokens(self) -> int:
        """Prompt tokens expected to be served from this deployment's prompt cache (0: cold)."""
        f = self._f
        return f[3][0] if len(f) > 3 else 0  # type: ignore[no-any-return]

    @property
    def expected_cache_write_tokens(self) -> int:
        """Prompt tokens this request is expected to write to an explicit cache (priced at cache_write)."""
        f = self._f
        return f[3][1] if len(f) > 3 else 0  # type: ignore[no-any-return]

    @property
    def cold_cost(self) -> Decimal:
        """The expected cost with no cache hit or write: every prompt token at the input price."""
        f = self._f
        if len(f) == 3:
            return self.expected_cost
        cold: Decimal | None = f[4]
        return cold if cold is not None else _list_cost(f)

    def _values(self) -> tuple[Any, ...]:
        values = (self.deployment, self.expected_cost, self.unit_prices, self.recent_latency_s)
        if len(self._f) > 3:
            return values + (self.expected_cached_tokens, self.expected_cache_write_tokens)
        return values

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Candidate:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        d, cost, up, lat = self._values()[:4]
        cache = (f", expected_cached_tokens={self.expected_cached_tokens}, "
                 f"expected_cache_write_tokens={self.expected_cache_write_tokens}") if len(self._f) > 3 else ""
        return (f"Candidate(deployment={d!r}, expected_cost={cost!r}, unit_prices={up!r}, "
                f"recent_latency_s={lat!r}{cache})")

    def __reduce__(self) -> tuple[Any, ...]:
        return Candidate, self._values() + ((self.cold_cost,) if len(self._f) > 3 else ())


def _list_cost(f: tuple[Any, ...]) -> Decimal:
    """The cost of a planned row at list prices (no cache): exactly expected_cost() (see price_index)."""
    (_, _, a, b, unit), _, (p, e) = f[:3]
    v = p * a + e * b
    return EXACT.multiply(_D(v), unit) if v else _ZERO


_SET_F = _setter(Candidate, "_f")
_SET_COST = _setter(Candidate, "_cost")


@dataclass(frozen=True, slots=True)
class Exclusion:
    deployment: Deployment
    reason: str
    detail: str

    def describe(self) -> str:
        return f"{self.deployment.provider}/{self.deployment.model}: {self.detail}"


class Decision(_Frozen):
    """The ranked candidates (best first) and every excluded deployment with its reason.

    `excluded` is written when first read (the pipeline reads it only when nothing is eligible; explanations do).
    """

    __slots__ = ("candidates", "_excluded", "_why")
    candidates: tuple[Candidate, ...]
    _excluded: tuple[Exclusion, ...] | None
    _why: tuple[Any, ...] | None

    def __init__(self, candidates: tuple[Candidate, ...], excluded: tuple[Exclusion, ...]) -> None:
        _SET_CANDIDATES(self, candidates)
        _SET_EXCLUDED(self, excluded)
        _SET_WHY(self, None)

    @property
    def excluded(self) -> tuple[Exclusion, ...]:
        ex = self._excluded
        if ex is None:
            why = self._why
            ex = why[0](*why[1:])  # type: ignore[index]
            _SET_EXCLUDED(self, ex)
        return ex

    @property
    def all_context_length(self) -> bool:
        """True when every deployment was excluded because the request does not fit its context window."""
        return not self.candidates and bool(self.excluded) and all(e.reason == CONTEXT_LENGTH for e in self.excluded)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Decision:
            return NotImplemented
        return (self.candidates, self.excluded) == (other.candidates, other.excluded)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.candidates, self.excluded))

    def __repr__(self) -> str:
        return f"Decision(candidates={self.candidates!r}, excluded={self.excluded!r})"


_SET_CANDIDATES = _setter(Decision, "candidates")
_SET_EXCLUDED = _setter(Decision, "_excluded")
_SET_WHY = _setter(Decision, "_why")
