#!/usr/bin/env bash
# Start the machine's PostgreSQL 15 with logical replication and a superuser for tests.
set -euo pipefail
conf=/etc/postgresql/15/main/conf.d/syncpoint.conf
mkdir -p "$(dirname "$conf")"
printf "wal_level = logical\nmax_replication_slots = 32\nmax_wal_senders = 32\nlisten_addresses = '127.0.0.1'\n" > "$conf"
pg_ctlcluster 15 main restart 2>/dev/null || pg_ctlcluster 15 main start
for _ in $(seq 1 30); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.5
done
su postgres -c "psql -qc \"DO \\\$\\\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'syncpoint') THEN CREATE ROLE syncpoint LOGIN SUPERUSER REPLICATION PASSWORD 'syncpoint'; END IF; END\\\$\\\$\""
su postgres -c "psql -qtAc 'show wal_level'" | grep -qx logical
