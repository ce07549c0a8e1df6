"""Print "yes" when the tests' PostgreSQL answers (127.0.0.1:5432, user postgres, database
test), else "no". Used by scripts/test and noxfile.py to decide on the PostgreSQL pass."""

try:
    import psycopg

    psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3).close()
except Exception:
    print("no")
else:
    print("yes")
