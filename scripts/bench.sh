#!/usr/bin/env bash
# Benchmark of kube-audience-proxy, printed as a Markdown table. Not part of `cargo test`.
#
# Everything runs on 127.0.0.1 from a release build: the stand-in API server, a stand-in
# target serving a ~10 KB metrics body over HTTP and over HTTPS, the proxy, and tinyproxy as
# a plain-proxy reference when it is installed. Load comes from wrk (plain HTTP, with a Lua
# script for the absolute-form target) and from examples/bench_client.rs (HTTPS through
# CONNECT). For every scenario the variants (direct, this proxy, tinyproxy) run interleaved,
# REPS times each, and the table shows medians. CPU time per request is the proxy's user and
# system time from /proc over the requests served; peak RSS is VmHWM, reset before each run.
#
# Environment: SECONDS_PER_RUN (default 4), REPS (default 3). Needs wrk; bounded in time
# (about 15 runs x REPS x SECONDS_PER_RUN) and stops everything it starts.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_SECONDS=${SECONDS_PER_RUN:-4}
REPS=${REPS:-3}
command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install wrk)" >&2; exit 1; }
have_tinyproxy=false
command -v tinyproxy >/dev/null && have_tinyproxy=true

echo "bench: building (release) ..." >&2
cargo build --quiet --release --bin kube-audience-proxy --example stand_in_apiserver \
  --example stand_in_target --example bench_client
bin=target/release
client=$bin/examples/bench_client
SCRIPT=bench
# shellcheck source=scripts/common.sh
. scripts/common.sh

start_stand_ins 10240 --namespace bench --service-account prometheus

proxy_args=(
  --apiserver="$api_url" --apiserver-ca-file="$work/api/ca.crt"
  --apiserver-token-file="$work/api/token" --service-account=prometheus --namespace=bench
  --ca-file-destination="$work/proxy-ca.crt" --upstream-ca-file="$work/tls/target-ca.crt"
  --log-level=info
)

# Start-up and idle RSS first, on a fresh process each time (median of REPS).
startups=()
for _ in $(seq "$REPS"); do
  startups+=("$("$client" startup --url "http://$http_target/metrics" \
    --audience-url "http://$http_target/metrics?kubernetes-audience=bench-start" -- \
    "$bin/kube-audience-proxy" --insecure-listen-address='127.0.0.1:{port}' \
    "${proxy_args[@]}" --ca-file-destination="$work/startup-ca.crt")")
done

"$bin/kube-audience-proxy" --insecure-listen-address=127.0.0.1:0 "${proxy_args[@]}" \
  >"$work/proxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")
proxy_addr=$(wait_for "$work/proxy.log" 'msg="listening" addr=' | cut -d' ' -f1)

tiny_addr=""
if $have_tinyproxy; then
  tiny_port=$(free_port)
  cat >"$work/tinyproxy.conf" <<EOF
Port $tiny_port
Listen 127.0.0.1
Timeout 60
MaxClients 200
LogLevel Critical
LogFile "$work/tinyproxy.log"
PidFile "$work/tinyproxy.pid"
Allow 127.0.0.1
DisableViaHeader Yes
EOF
  [[ $(id -u) == 0 ]] && printf 'User nobody\nGroup nogroup\n' >>"$work/tinyproxy.conf"
  tinyproxy -d -c "$work/tinyproxy.conf" >"$work/tinyproxy.out" 2>&1 &
  tiny_pid=$!
  pids+=("$tiny_pid")
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$tiny_port") 2>/dev/null && { tiny_addr="127.0.0.1:$tiny_port"; break; }
    sleep 0.05
  done
  [[ -n $tiny_addr ]] || echo "bench: tinyproxy did not start; skipping it" >&2
fi

# CPU ticks (user+system) of PID.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
reset_peak() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }
hz=$(getconf CLK_TCK)

# wrk: a Lua script that puts the absolute-form target on the request line.
wrk_script() { # $1 = path (absolute URL or origin form), $2 = "close" for a new connection each
  {
    echo "wrk.path = \"$1\""
    [[ ${2:-} == close ]] && echo 'wrk.headers["Connection"] = "close"'
    echo 'done = function(summary, latency, requests)
  io.write(string.format("requests=%d errors=%d rps=%.1f p50_ms=%.3f p99_ms=%.3f\n",
    summary.requests, summary.errors.status + summary.errors.read + summary.errors.write
      + summary.errors.connect + summary.errors.timeout,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end'
  } >"$work/wrk.lua"
}

# One measurement: prints "rps p50 p99 cpu_us_per_req peak_mib errors".
# $1 variant (direct|proxy|tiny), $2 scenario.
measure() {
  local variant=$1 scenario=$2 pid="" line
  case $variant in proxy) pid=$proxy_pid ;; tiny) pid=$tiny_pid ;; esac
  local before=0
  if [[ -n $pid ]]; then reset_peak "$pid"; before=$(cpu_ticks "$pid"); fi
  case $scenario in
    http-ka | http-new)
      local mode="" conns=50
      [[ $scenario == http-new ]] && { mode=close; conns=10; }
      local url="http://$http_target/metrics?kubernetes-audience=bench-http"
      case $variant in
        direct) wrk_script "/metrics" "$mode"; url="http://$http_target" ;;
        proxy) wrk_script "$url" "$mode"; url="http://$proxy_addr" ;;
        tiny) wrk_script "http://$http_target/metrics" "$mode"; url="http://$tiny_addr" ;;
      esac
      line=$(wrk -t2 -c"$conns" -d"${RUN_SECONDS}s" -s "$work/wrk.lua" "$url" | grep '^requests=')
      ;;
    https-ka1 | https-ka10 | https-new)
      local conns=1 extra=()
      [[ $scenario == https-ka10 ]] && conns=10
      [[ $scenario == https-new ]] && { conns=10; extra=(--new-connections); }
      local args=(--url "https://$https_target/metrics?kubernetes-audience=bench-https"
        --connections "$conns" --seconds "$RUN_SECONDS" "${extra[@]}")
      case $variant in
        direct) line=$("$client" load "${args[@]}" --ca "$work/tls/target-ca.crt") ;;
        proxy) line=$("$client" load "${args[@]}" --ca "$work/proxy-ca.crt" --proxy "$proxy_addr") ;;
        tiny) line=$("$client" load "${args[@]}" --ca "$work/tls/target-ca.crt" --proxy "$tiny_addr") ;;
      esac
      ;;
  esac
  local requests errors rps p50 p99
  requests=$(grep -o 'requests=[0-9]*' <<<"$line" | cut -d= -f2)
  errors=$(grep -o 'errors=[0-9]*' <<<"$line" | cut -d= -f2)
  rps=$(grep -o 'rps=[0-9.]*' <<<"$line" | cut -d= -f2)
  p50=$(grep -o 'p50_ms=[0-9.]*' <<<"$line" | cut -d= -f2)
  p99=$(grep -o 'p99_ms=[0-9.]*' <<<"$line" | cut -d= -f2)
  local cpu="-" peak="-"
  if [[ -n $pid ]]; then
    local after
    after=$(cpu_ticks "$pid")
    cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" \
      'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }')
    peak=$(awk -v k="$(peak_kib "$pid")" 'BEGIN { printf "%.1f", k / 1024 }')
  fi
  echo "$rps $p50 $p99 $cpu $peak $errors"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (v[1] == "-") print "-"; else print v[int((NR + 1) / 2)] }'; }

scenarios=(http-ka http-new https-ka1 https-ka10 https-new)
declare -A title=(
  [http-ka]="HTTP keep-alive, 50 connections"
  [http-new]="HTTP, new connection per request (10 clients)"
  [https-ka1]="HTTPS via CONNECT, 1 tunnel reused"
  [https-ka10]="HTTPS via CONNECT, 10 tunnels reused"
  [https-new]="HTTPS, new CONNECT + TLS handshake per request (10 clients)"
)
variants=(direct proxy)
[[ -n $tiny_addr ]] && variants+=(tiny)

# Warm-up: first tokens, leaf certificates and pooled upstream connections.
for v in "${variants[@]}"; do
  SAVED=$RUN_SECONDS; RUN_SECONDS=1
  measure "$v" http-ka >/dev/null; measure "$v" https-ka1 >/dev/null
  RUN_SECONDS=$SAVED
done

for s in "${scenarios[@]}"; do
  echo "bench: ${title[$s]} ..." >&2
  for rep in $(seq "$REPS"); do
    for v in "${variants[@]}"; do
      measure "$v" "$s" >>"$work/result.$s.$v"
      sleep 0.5
    done
  done
done

idle_after_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$proxy_pid/status")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
col() { awk -v c="$1" '{print $c}' "$2" | median; }

echo
echo "| scenario | via | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | req/s ÷ direct | p50 ÷ direct | p99 ÷ direct | errors |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
declare -A via=([direct]="direct" [proxy]="kube-audience-proxy" [tiny]="tinyproxy")
for s in "${scenarios[@]}"; do
  d_rps=$(col 1 "$work/result.$s.direct"); d_p50=$(col 2 "$work/result.$s.direct")
  d_p99=$(col 3 "$work/result.$s.direct")
  for v in "${variants[@]}"; do
    f="$work/result.$s.$v"
    rps=$(col 1 "$f"); p50=$(col 2 "$f"); p99=$(col 3 "$f"); cpu=$(col 4 "$f"); peak=$(col 5 "$f")
    errors=$(awk '{ s += $6 } END { print s + 0 }' "$f")
    if [[ $v == direct ]]; then
      echo "| ${title[$s]} | direct | $rps | $p50 | $p99 | - | - | 1 | 1 | 1 | $errors |"
    else
      echo "| | ${via[$v]} | $rps | $p50 | $p99 | $cpu | $peak | $(ratio "$rps" "$d_rps") | $(ratio "$p50" "$d_p50") | $(ratio "$p99" "$d_p99") | $errors |"
    fi
  done
done

first=$(printf '%s\n' "${startups[@]}" | grep -o 'first_ms=[0-9.]*' | cut -d= -f2 | median)
aud=$(printf '%s\n' "${startups[@]}" | grep -o 'audience_ms=[0-9.]*' | cut -d= -f2 | median)
idle=$(printf '%s\n' "${startups[@]}" | grep -o 'idle_rss_kib=[0-9]*' | cut -d= -f2 | median)
size=$(stat -c %s "$bin/kube-audience-proxy")
static=target/x86_64-unknown-linux-gnu/release/kube-audience-proxy
echo
echo "| measure | value |"
echo "|---|---:|"
echo "| start-up to the first served request (no audience) | $first ms |"
echo "| start-up to the first request with an audience (includes the TokenRequest) | $aud ms |"
echo "| idle RSS after start-up and one token | $(awk -v k="$idle" 'BEGIN { printf "%.2f", k / 1024 }') MiB |"
echo "| idle RSS after the load above | $(awk -v k="$idle_after_kib" 'BEGIN { printf "%.2f", k / 1024 }') MiB |"
echo "| release binary (\`cargo build --release\`, dynamically linked glibc) | $(awk -v b="$size" 'BEGIN { printf "%.2f", b / 1e6 }') MB |"
if [[ -f $static ]]; then
  echo "| static glibc binary (\`-C target-feature=+crt-static\`) | $(awk -v b="$(stat -c %s "$static")" 'BEGIN { printf "%.2f", b / 1e6 }') MB |"
fi
echo
echo "Medians of $REPS runs of ${RUN_SECONDS}s each; $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
