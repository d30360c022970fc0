"""Cache-aware routing: the prompt-prefix cache model's edges (hashing, storage, the request-path facade)."""
