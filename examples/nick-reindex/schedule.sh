#!/bin/sh
# Adds the scheduled job that reindexes a site every night at 03:00 UTC:
#   schedule.sh [SITE]        (news by default)
# It runs `nick-jobs schedules add`, which needs an administrator: log in first
# (`nick-jobs login http://localhost:8080 admin`), or set NICK_JOBS_URL and NICK_JOBS_TOKEN.
# The jobs it creates are submitted as that administrator, and reindex.mjs runs them.
set -eu
site=${1:-news}
exec nick-jobs schedules add "reindex-$site-nightly" \
  --action reindex \
  --schedule '0 3 * * *' \
  --timezone UTC \
  --title "Reindex $site nightly" \
  "site=$site"
