"""`gateway simulate`: the transcripts, and a short run whose totals come from the ledger."""

from __future__ import annotations

import asyncio

from gateway.simulate import SCENARIOS, agent_transcript, chat_transcript, render, simulate


def test_transcripts_grow_by_whole_turns_and_agent_results_grow() -> None:
    chat = chat_transcript(1, 4, "system")
    assert [len(r) for r in chat] == [2, 4, 6, 8]
    assert all(r[: len(prev)] == prev for prev, r in zip(chat, chat[1:]))  # each request extends the last
    agent = agent_transcript(2, 4, "system")
    results = [r[-1]["content"] for r in agent[1:]]
    assert [m["role"] for m in agent[1][-2:]] == ["assistant", "tool"]
    assert len(results[0]) < len(results[1]) < len(results[2])


def test_a_price_cut_moves_a_cache_blind_router_and_costs_it_more() -> None:
    cut = [s for s in SCENARIOS if s.cut is not None]
    results = asyncio.run(simulate(4, scenarios=tuple(cut), policies=("list-price", "cache-aware")))
    blind, aware = results
    assert blind.requests == aware.requests == 5 * 4
    assert blind.moves > 0 and aware.moves == 0
    assert aware.total_cost < blind.total_cost
    assert aware.cached_share > blind.cached_share
    table = render(results, 4)
    assert "price cut at the cold provider | cache-aware" in table and format(aware.total_cost.normalize(), "f") in table
