"""Versioned schema migrations: mNNNN_name.py modules, run in order by gateway.db.upgrade."""
