"""The project bench/run.py serves with gunicorn: a hello-world view and streams, behind
the same middleware, on a database named by GES_BENCH_DB (a SQLite path or postgres:NAME)."""
