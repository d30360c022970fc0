"""Client API keys and teams: issuing, hashing, revoking, and the in-memory cache the request path reads."""
