#!/bin/bash
# The RDS stand-in's entrypoint, run as root in rds-auth-proxy-test/postgres:15.
#
# The harness (integration/src/harness/standin.rs) copies into /standin/ before the container
# starts: this script, init.sql, the rds-auth-standin binary, standin.toml, server.crt and
# server.key. The script sets up a throwaway cluster whose pg_hba.conf sends the rds_iam role's
# members through PAM, where pam_exec runs `rds-auth-standin verify`; starts the TLS front for
# long tokens; prints `STANDIN READY` on stdout; and stops everything once the lifeline lets go
# (the test process closed its connection, or never opened one).
set -euo pipefail

S=/standin
PGBIN=/usr/lib/postgresql/15/bin
DATA=$S/data
SOCK=$S/sock
CONFIG=$S/standin.toml
LOG=$S/verify.log

say() { echo "standin: $*" >&2; }

# The lifeline starts first, so the harness can connect as soon as the container is up.
"$S/rds-auth-standin" lifeline --config "$CONFIG" &
LIFELINE=$!

# Postgres refuses a key that others can read, and runs as postgres; the front, as root, reads
# the originals.
install -d -o postgres -g postgres -m 700 "$DATA" "$SOCK"
install -o postgres -g postgres -m 644 "$S/server.crt" "$S/pg.crt"
install -o postgres -g postgres -m 600 "$S/server.key" "$S/pg.key"
# pam_exec runs the verifier as postgres, and the front writes as root.
install -o postgres -g postgres -m 666 /dev/null "$LOG"

say "initdb"
runuser -u postgres -- "$PGBIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=reject \
    -E UTF8 --no-locale >/dev/null

cat >"$DATA/pg_hba.conf" <<'HBA'
local   all all                 trust
host    all all 127.0.0.1/32    trust
hostssl all +rds_iam all        pam pamservice=rds-iam
hostssl all scram_user all      scram-sha-256
hostssl all md5_user all        md5
hostssl all password_user all   password
hostssl all all all             scram-sha-256
host    all all all             reject
HBA
chown postgres:postgres "$DATA/pg_hba.conf"

cat >/etc/pam.d/rds-iam <<PAM
auth    required pam_exec.so expose_authtok quiet $S/rds-auth-standin verify --config $CONFIG
account required pam_permit.so
PAM

say "starting postgres"
runuser -u postgres -- "$PGBIN/postgres" -D "$DATA" \
    -c listen_addresses='*' -c port=5432 -c unix_socket_directories="$SOCK" \
    -c ssl=on -c ssl_cert_file="$S/pg.crt" -c ssl_key_file="$S/pg.key" \
    -c max_connections=1200 -c shared_buffers=128MB \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c logging_collector=off -c log_destination=stderr -c log_connections=on \
    -c log_line_prefix='postgres %m [%p] ' &
POSTGRES=$!

for _ in $(seq 1 300); do
    if "$PGBIN/pg_isready" -q -h "$SOCK" -p 5432 -U postgres; then break; fi
    if ! kill -0 "$POSTGRES" 2>/dev/null; then say "postgres exited during startup"; exit 1; fi
    sleep 0.1
done
"$PGBIN/pg_isready" -h "$SOCK" -p 5432 -U postgres >&2

say "creating roles and databases"
runuser -u postgres -- "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p 5432 -U postgres -d postgres \
    -f "$S/init.sql" >&2

say "starting the front"
"$S/rds-auth-standin" front --config "$CONFIG" &
FRONT=$!
for _ in $(seq 1 100); do
    if nc -z 127.0.0.1 5433 2>/dev/null; then break; fi
    if ! kill -0 "$FRONT" 2>/dev/null; then say "the front exited during startup"; exit 1; fi
    sleep 0.05
done

# Every verdict, as it is written, reaches the container log.
tail -n +1 -F "$LOG" >&2 2>/dev/null &
TAIL=$!

stop() {
    say "stopping ($1)"
    kill "$FRONT" "$TAIL" "$LIFELINE" 2>/dev/null || true
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
    exit 0
}
trap 'stop signal' TERM INT

echo "STANDIN READY"

# Whichever ends first (the lifeline letting go, Postgres or the front dying) ends the container.
set +e
wait -n "$LIFELINE" "$POSTGRES" "$FRONT"
stop "a process ended"
