#!/usr/bin/env bash
# Runs every fuzz target for $1 seconds (default 600) on one core, one after another.
set -u
cd "$(dirname "$0")/.."
secs=${1:-600}
for t in http_query udp_packet jwt jwks forwarded_for config torrent; do
  case $t in http_query) dict=(-dict=fuzz/dict/http_query.dict);; jwt|jwks) dict=(-dict=fuzz/dict/json.dict);; *) dict=();; esac
  cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -max_len=4096 "${dict[@]}" >"/tmp/fuzz-$t.log" 2>&1
  echo "$t exit $?" >> /tmp/fuzz-summary.log
done
