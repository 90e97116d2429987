"""Cancels a running query through the proxies with psycopg or asyncpg.

usage: cancel.py psycopg|asyncpg HOST PORT USER DBNAME

Prints one line, `cancelled <seconds>` or `NOT CANCELLED: ...`, and exits 0 only when the
server reported the statement cancelled (SQLSTATE 57014) and the connection still works.
"""

import asyncio
import os
import sys
import threading
import time


# Tests run side by side; each run's statement is its own.
QUERY = f"SELECT pg_sleep(60) /* {os.getpid()} */"


def with_psycopg(host, port, user, dbname):
    import psycopg

    conn = psycopg.connect(
        host=host, port=port, user=user, dbname=dbname, sslmode="disable", connect_timeout=10, autocommit=True
    )
    outcome = {}

    def run():
        try:
            conn.execute(QUERY)
            outcome["error"] = "the query finished"
        except psycopg.errors.QueryCanceled:
            outcome["cancelled"] = time.monotonic()
        except Exception as e:  # noqa: BLE001 - report whatever went wrong
            outcome["error"] = repr(e)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(1.0)
    started = time.monotonic()
    # cancel_safe (psycopg 3.2) uses libpq's PQcancelCreate; cancel() the old PQcancel.
    conn.cancel_safe()
    worker.join(30)
    if "cancelled" not in outcome:
        return f"NOT CANCELLED: {outcome.get('error', 'no answer in 30 s')}"
    assert conn.execute("SELECT 1").fetchone()[0] == 1
    return f"cancelled {outcome['cancelled'] - started:.3f}"


async def with_asyncpg(host, port, user, dbname):
    import asyncpg

    conn = await asyncpg.connect(host=host, port=port, user=user, database=dbname, ssl=False, timeout=10)
    query = asyncio.ensure_future(conn.fetch(QUERY))
    await asyncio.sleep(1.0)
    started = time.monotonic()
    # Cancelling the task makes asyncpg send a CancelRequest on a new connection.
    query.cancel()
    try:
        await query
    except asyncio.CancelledError:
        pass
    # asyncpg waits for the server to answer the cancelled query before the connection is
    # usable again; if the cancel was lost, this would take the full 60 s.
    running = await asyncio.wait_for(
        conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'", QUERY),
        timeout=30,
    )
    elapsed = time.monotonic() - started
    await conn.close()
    if running != 0:
        return f"NOT CANCELLED: {running} statement(s) still running"
    return f"cancelled {elapsed:.3f}"


def main():
    driver, host, port, user, dbname = sys.argv[1:6]
    if driver == "psycopg":
        line = with_psycopg(host, int(port), user, dbname)
    else:
        line = asyncio.run(with_asyncpg(host, int(port), user, dbname))
    print(line)
    sys.exit(0 if line.startswith("cancelled") else 1)


if __name__ == "__main__":
    main()
