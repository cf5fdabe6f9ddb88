#!/usr/bin/env bash
# Soak and leak check of kube-audience-proxy, on 127.0.0.1 from a release build:
#   1. REQUESTS (default 200000) requests, keep-alive and new connections mixed, plain HTTP
#      and intercepted HTTPS, over 20 audiences whose tokens live TOKEN_SECONDS (default 1 s,
#      so they are refreshed all the time): no request may fail; the proxy's anonymous RSS after the
#      run must be within 10% of its RSS after the first 10,000; once the clients have left
#      and the idle upstream connections have expired (the proxy runs with a 2 s idle
#      timeout), its open descriptors must be back to the count at start.
#   2. HOLD (default 1000) client connections held open while requests flow: each is served
#      before and after the load, none is refused.
# Stops everything it starts. Exits non-zero, saying which check failed.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-200000}
HOLD=${HOLD:-1000}
# One second, so that the first 10,000 requests (about a second and a half) already include
# token refreshes: the memory baseline is then taken in the steady state, not before it.
TOKEN_SECONDS=${TOKEN_SECONDS:-1}
# Descriptors for the held connections, both sides, plus the load.
ulimit -n 8192 2>/dev/null || true

echo "soak: building (release) ..." >&2
cargo build --quiet --release --bin kube-audience-proxy --example stand_in_apiserver \
  --example stand_in_target --example bench_client
bin=target/release
client=$bin/examples/bench_client
SCRIPT=soak
# shellcheck source=scripts/common.sh
. scripts/common.sh
failed=0
check() { # $1 = condition (0/1), $2 = message
  if [[ $1 == 1 ]]; then echo "soak: ok     $2"; else echo "soak: FAILED $2"; failed=1; fi
}

start_stand_ins 10240 --namespace soak --service-account prometheus \
  --token-lifetime-seconds "$TOKEN_SECONDS"

"$bin/kube-audience-proxy" --insecure-listen-address=127.0.0.1:0 \
  --apiserver="$api_url" --apiserver-ca-file="$work/api/ca.crt" \
  --apiserver-token-file="$work/api/token" --service-account=prometheus --namespace=soak \
  --ca-file-destination="$work/proxy-ca.crt" --upstream-ca-file="$work/tls/target-ca.crt" \
  --upstream-idle-timeout=2s >"$work/proxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")
proxy=$(wait_for "$work/proxy.log" 'msg="listening" addr=' | cut -d' ' -f1)

# Anonymous resident memory: what the proxy allocated. File-backed pages (its code) grow as
# later phases run code the first one did not, which says nothing about leaks.
rss_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$proxy_pid/status"; }
code_kib() { awk '/^RssFile:/ {print $2}' "/proc/$proxy_pid/status"; }
# Open descriptors, not counting the TokenRequest client's keep-alive connections to the API
# server, which its HTTP client pools for a while on purpose.
api_port=${api_url##*:}
fds() {
  local all api
  all=$(find "/proc/$proxy_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  api=$(ss -tnp 2>/dev/null | grep "pid=$proxy_pid," | grep -c " 127.0.0.1:$api_port " || true)
  echo $((all - api))
}
fds_start=$(fds)

# Runs N requests split over four clients at once: plain keep-alive (20 connections), plain
# new connections (4), intercepted keep-alive (10 tunnels), intercepted new CONNECT + TLS (4).
# Appends each client's result line to $work/results.
mixed() {
  local n=$1 c_pids=() k
  local http="http://$http_target/metrics?kubernetes-audience={aud}"
  local https="https://$https_target/metrics?kubernetes-audience={aud}"
  local common=(--audiences 20 --seconds 3600 --proxy "$proxy")
  "$client" load --url "$http" "${common[@]}" --connections 20 --requests $((n * 4 / 10)) \
    >"$work/c1" &
  c_pids+=($!)
  "$client" load --url "$http" "${common[@]}" --connections 4 --new-connections \
    --requests $((n * 2 / 10)) >"$work/c2" &
  c_pids+=($!)
  "$client" load --url "$https" "${common[@]}" --ca "$work/proxy-ca.crt" --connections 10 \
    --requests $((n * 3 / 10)) >"$work/c3" &
  c_pids+=($!)
  "$client" load --url "$https" "${common[@]}" --ca "$work/proxy-ca.crt" --connections 4 \
    --new-connections --requests $((n - n * 9 / 10)) >"$work/c4" &
  c_pids+=($!)
  for k in "${c_pids[@]}"; do wait "$k"; done
  cat "$work/c1" "$work/c2" "$work/c3" "$work/c4" >>"$work/results"
}
sum() { grep -o "$1=[0-9]*" "$work/results" | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }'; }

echo "soak: first 10000 requests ..." >&2
mixed 10000
# Past the idle timeout and the next pass of the reaper: pooled connections are gone.
sleep 3
rss_first=$(rss_kib)
code_first=$(code_kib)
fds_first=$(fds)
echo "soak: $((REQUESTS - 10000)) more requests (tokens live ${TOKEN_SECONDS}s) ..." >&2
started=$(date +%s)
mixed $((REQUESTS - 10000))
elapsed=$(($(date +%s) - started))
sleep 3
rss_last=$(rss_kib)
code_last=$(code_kib)
fds_last=$(fds)

served=$(sum requests)
errors=$(sum errors)
echo "soak: $served requests served, $errors failed; last $((REQUESTS - 10000)) in ${elapsed}s"
check "$([[ $errors == 0 && $served == "$REQUESTS" ]] && echo 1 || echo 0)" \
  "all $REQUESTS requests served ($served), none failed ($errors)"
check "$(awk -v a="$rss_first" -v b="$rss_last" 'BEGIN { print (b <= a * 1.10) ? 1 : 0 }')" \
  "anonymous RSS after the run ($rss_last KiB) within 10% of after the first 10000 ($rss_first KiB); code pages $code_first -> $code_last KiB"
check "$([[ $fds_last -le $fds_start && $fds_first -le $fds_start ]] && echo 1 || echo 0)" \
  "open descriptors once clients left: $fds_last after the run, $fds_first after the first 10000, $fds_start at start"

echo "soak: $HOLD connections held open while requests flow ..." >&2
: >"$work/results"
"$client" load --url "http://$http_target/metrics?kubernetes-audience={aud}" --proxy "$proxy" \
  --audiences 20 --connections 10 --seconds 5 --hold "$HOLD" >"$work/hold"
cat "$work/hold" >>"$work/results"
held=$(grep -o 'held=[0-9]*' "$work/hold" | cut -d= -f2)
hold_errors=$(grep -o 'hold_errors=[0-9]*' "$work/hold" | cut -d= -f2)
check "$([[ $held == "$HOLD" && $hold_errors == 0 && $(sum errors) == 0 ]] && echo 1 || echo 0)" \
  "$held of $HOLD held connections served before and after, $hold_errors refused or failed; $(sum requests) other requests meanwhile, $(sum errors) failed"
sleep 3
fds_end=$(fds)
check "$([[ $fds_end -le $fds_start ]] && echo 1 || echo 0)" \
  "descriptors after the held connections closed: $fds_end (at start: $fds_start)"
exit "$failed"
