"""Budgets (reserve/settle) and rate limits, in Redis across replicas or in process without it."""
