"""Client dialects: the APIs requests come in on, translated at the edge to the one canonical request path.

`DIALECTS` maps each inbound API's name (the ledger's `api` column) to its dialect; `ROUTES` maps each POST path
to that name. A new inbound API is one dialect module and one line in each.
"""

from __future__ import annotations

from gateway.dialects.base import ClientDialect
from gateway.dialects.chat import ChatDialect, EmbeddingsDialect
from gateway.dialects.messages import MESSAGES
from gateway.dialects.responses_dialect import ResponsesDialect

DIALECTS: dict[str, ClientDialect] = {
    "chat": ChatDialect(),
    "embeddings": EmbeddingsDialect(),
    "messages": MESSAGES,
    "responses": ResponsesDialect(),
}

ROUTES: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/responses": "responses",
}
