"""Request facts for the `gateway route` dry run, built from command-line numbers instead of a body."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from gateway.accounting import utc_now
from gateway.config.schema import Config
from gateway.domain import Constraints, Deployment, PriceVersion, RequestFacts
from gateway.errors import ModelNotFound
from gateway.prices.book import version_from_config


def dry_run_facts(cfg: Config, model: str, prompt_tokens: int, max_tokens: int | None, min_quality: int | None,
                  prices: PriceVersion | None = None) -> tuple[RequestFacts, list[Deployment], PriceVersion, datetime]:
    deployments = [d.to_deployment() for d in cfg.deployments]
    facts = RequestFacts(
        model=model, mode="chat", prompt_tokens=prompt_tokens, requested_output_tokens=max_tokens,
        expected_output_tokens=max_tokens if max_tokens is not None else cfg.gateway.default_expected_output_tokens,
        constraints=Constraints(min_quality=min_quality),
    )
    route = cfg.routes.get(model)
    if route is not None:
        rc = Constraints(route.min_quality, route.min_context,
                         frozenset(route.providers) if route.providers is not None else None, route.max_cost)
        facts = replace(facts, constraints=rc.merged(facts.constraints))
        pool = [d for d in deployments if d.mode == "chat"]
    else:
        pool = [d for d in deployments if d.model == model]
        if not pool:
            raise ModelNotFound(f"'{model}' is neither a route nor a deployed model")
    return facts, pool, prices or version_from_config(cfg), utc_now()
