"""The simulated vendors' prompt cache as plain data: blocks, minimum, TTL, divergence, namespaces, breakpoints."""

from __future__ import annotations

import pytest

from gateway.demo.prompt_cache import CachePolicy, PrefixCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tokens(n: int, tag: str = "t") -> list[str]:
    return [f"{tag}{i}" for i in range(n)]


def make(block: int = 4, minimum: int = 0, ttl: float = 10.0) -> tuple[PrefixCache, Clock]:
    clock = Clock()
    return PrefixCache(CachePolicy(block_tokens=block, min_tokens=minimum, ttl_s=ttl), clock=clock), clock


@pytest.mark.parametrize(
    ("first", "second", "policy", "cached"),
    [
        (tokens(10), tokens(10), (4, 0), 8),  # two whole blocks; the last two tokens are not a block
        (tokens(10), tokens(10) + ["more"], (4, 0), 8),
        (tokens(10), tokens(5) + ["x"] * 5, (4, 0), 4),  # diverging in block 2: only block 1 hits
        (tokens(10), ["x"] + tokens(10)[1:], (4, 0), 0),  # a different first token shares no prefix
        (tokens(10), tokens(10), (1, 0), 10),  # token-granular
        (tokens(10), tokens(10), (4, 9), 0),  # the 8 shared tokens are below the minimum of 9
        (tokens(12), tokens(12), (4, 9), 12),
        (tokens(5), tokens(20), (4, 8), 0),  # the first prompt was below the minimum: never stored
        (tokens(1100), tokens(1100) + ["q"], (128, 1024), 1024),  # OpenAI: 1,024 then 128-token steps
        (tokens(1300), tokens(1300), (128, 1024), 1280),
    ],
)
def test_automatic_cache_hits_the_shared_leading_blocks_at_or_above_the_minimum(first, second, policy, cached):
    cache, _ = make(*policy)
    assert cache.lookup_and_store(first) == 0
    assert cache.lookup_and_store(second) == cached


def test_entries_expire_ttl_after_their_last_use_and_each_hit_restarts_the_ttl():
    cache, clock = make(ttl=10)
    cache.lookup_and_store(tokens(8))
    clock.now += 9
    assert cache.lookup_and_store(tokens(8)) == 8  # a hit refreshes
    clock.now += 9
    assert cache.lookup_and_store(tokens(8)) == 8
    clock.now += 10.5
    assert cache.lookup_and_store(tokens(8)) == 0  # expired; stored again by this request
    assert cache.lookup_and_store(tokens(8)) == 8


def test_advance_ages_the_cache_like_waiting_would():
    cache, _ = make(ttl=10)
    cache.lookup_and_store(tokens(8))
    cache.advance(11)
    assert cache.lookup_and_store(tokens(8)) == 0


def test_namespaces_keep_models_apart_and_clear_forgets_everything():
    cache, _ = make(block=2)
    cache.lookup_and_store(tokens(3), namespace="model-1")
    assert cache.lookup_and_store(tokens(3), namespace="model-2") == 0
    assert cache.lookup_and_store(tokens(3), namespace="model-1") == 2
    cache.clear()
    assert cache.lookup_and_store(tokens(3), namespace="model-1") == 0


def test_lru_bound_evicts_the_least_recently_used_prefixes():
    cache = PrefixCache(CachePolicy(block_tokens=2, min_tokens=0, ttl_s=100), max_entries=4)
    cache.lookup_and_store(tokens(4, "a"))  # 2 entries
    cache.lookup_and_store(tokens(4, "b"))  # 2 more: full
    cache.lookup_and_store(tokens(4, "c"))  # evicts a's
    assert cache.lookup_and_store(tokens(4, "a")) == 0
    assert cache.snapshot()["entries"] == 4


@pytest.mark.parametrize(
    ("breakpoints_1", "breakpoints_2", "expected_1", "expected_2"),
    [
        ([6], [6], (0, 6), (6, 0)),  # written on first sight, read after
        ([6], [6, 9], (0, 6), (6, 3)),  # the next turn reads the old breakpoint and writes the new one
        ([3], [3], (0, 0), (0, 0)),  # below the minimum of 4: never cached
        ([], [6], (0, 0), (0, 6)),  # no breakpoint: nothing cached
        ([4, 8], [8], (0, 8), (8, 0)),
    ],
)
def test_explicit_breakpoints_write_on_first_sight_and_read_after(breakpoints_1, breakpoints_2, expected_1, expected_2):
    cache, _ = make(block=1, minimum=4)
    assert cache.explicit(tokens(10), breakpoints_1) == expected_1
    assert cache.explicit(tokens(10), breakpoints_2) == expected_2


def test_explicit_prefix_diverging_before_the_breakpoint_is_written_again():
    cache, clock = make(block=1, minimum=4, ttl=300)
    cache.explicit(tokens(10), [6])
    assert cache.explicit(["x"] + tokens(10)[1:], [6]) == (0, 6)
    clock.now += 301
    assert cache.explicit(tokens(10), [6]) == (0, 6)


def test_a_bad_policy_is_refused():
    with pytest.raises(ValueError):
        CachePolicy(block_tokens=0)
    with pytest.raises(ValueError):
        CachePolicy(ttl_s=0)
