#!/usr/bin/env bash
# End-to-end check with real clients, on 127.0.0.1 only: starts the stand-in API server, a
# plain-HTTP and an HTTPS stand-in target, and the proxy between them; then
#   1. curl through the proxy, over HTTP and over HTTPS (--cacert on the CA the proxy wrote);
#   2. a real Prometheus with proxy_url, params (the audience) and tls_config.ca_file scraping
#      both targets, checked through its query API: both targets up, and each saw a token
#      minted for its own audience.
# Installs nothing (.ci/run installs curl and prometheus). Prints what it checked; exits
# non-zero with the reason (Prometheus's lastError for a target that is down) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "e2e: FAILED: $*" >&2
  exit 1
}
for tool in cargo curl prometheus; do
  command -v "$tool" >/dev/null || fail "$tool is needed (.ci/run installs it)"
done

cargo build --quiet --locked --bin kube-audience-proxy --example stand_in_apiserver \
  --example stand_in_target
bin=target/debug
SCRIPT=e2e
# shellcheck source=scripts/common.sh
. scripts/common.sh

start_stand_ins 2000 --namespace e2e --service-account prometheus

"$bin/kube-audience-proxy" \
  --insecure-listen-address=127.0.0.1:0 \
  --apiserver="$api_url" \
  --apiserver-ca-file="$work/api/ca.crt" \
  --apiserver-token-file="$work/api/token" \
  --service-account=prometheus \
  --namespace=e2e \
  --ca-file-destination="$work/proxy-ca.crt" \
  --upstream-ca-file="$work/tls/target-ca.crt" \
  --allowed-audiences="e2e-http=127.0.0.1,e2e-https=localhost,curl-http,curl-https" \
  --log-level=debug >"$work/proxy.log" 2>&1 &
pids+=($!)
proxy_addr=$(wait_for "$work/proxy.log" 'msg="listening" addr=' | cut -d' ' -f1)
proxy="http://$proxy_addr"
echo "e2e: proxy listening on $proxy_addr; targets http://$http_target and https://$https_target"

# 1. curl, as a second real client.
out=$(curl -sS --fail --max-time 10 --proxy "$proxy" \
  "http://$http_target/metrics?kubernetes-audience=curl-http") || fail "curl over HTTP"
grep -q '^# token audience seen by the target: curl-http$' <<<"$out" ||
  fail "curl over HTTP: the target did not see a curl-http token: $(head -n 3 <<<"$out")"
echo "e2e: ok   curl over HTTP: the target saw a token for curl-http"

out=$(curl -sS --fail --max-time 10 --proxy "$proxy" --cacert "$work/proxy-ca.crt" \
  "https://$https_target/metrics?kubernetes-audience=curl-https") || fail "curl over HTTPS"
grep -q '^# token audience seen by the target: curl-https$' <<<"$out" ||
  fail "curl over HTTPS: the target did not see a curl-https token: $(head -n 3 <<<"$out")"
echo "e2e: ok   curl over HTTPS (CONNECT, --cacert on the proxy's CA): the target saw a token for curl-https"

# 2. Prometheus, configured the way the README documents it.
prom_port=$(free_port)
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: e2e-http
    proxy_url: $proxy
    params:
      kubernetes-audience: [e2e-http]
    static_configs:
      - targets: ['$http_target']
  - job_name: e2e-https
    proxy_url: $proxy
    scheme: https
    params:
      kubernetes-audience: [e2e-https]
    tls_config:
      ca_file: $work/proxy-ca.crt
    static_configs:
      - targets: ['$https_target']
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
prom="http://127.0.0.1:$prom_port"

# Prints the value of the first sample of an instant query, or nothing.
query() {
  curl -sS --max-time 5 --get "$prom/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
    grep -o '"value":\[[^]]*\]' | head -n 1 | sed -E 's/.*,"([^"]*)"\]/\1/' || true
}

# Prints lastError of the active target of JOB.
last_error() {
  curl -sS --max-time 5 "$prom/api/v1/targets?state=active" 2>/dev/null |
    grep -o "\"job\":\"$1\".*" | grep -E -o '"lastError":"([^"\\]|\\.)*"' | head -n 1 || true
}

for job in e2e-http e2e-https; do
  up=""
  for _ in $(seq 60); do
    up=$(query "up{job=\"$job\"}")
    [[ $up == 1 ]] && break
    sleep 0.5
  done
  if [[ $up != 1 ]]; then
    echo "--- prometheus log" >&2
    tail -n 20 "$work/prometheus.log" >&2
    echo "--- proxy log" >&2
    tail -n 20 "$work/proxy.log" >&2
    fail "Prometheus reports job $job down (up=${up:-none}): $(last_error "$job")"
  fi
  echo "e2e: ok   Prometheus: up{job=\"$job\"} == 1"

  seen=$(query "stand_in_target_token_audience{job=\"$job\",audience=\"$job\"}")
  [[ $seen == 1 ]] ||
    fail "job $job: the target did not report a token for audience $job (got: $(query "stand_in_target_token_audience{job=\"$job\"}"))"
  echo "e2e: ok   Prometheus: the $job target saw a token minted for audience $job"
done

if grep -q 'fake-token\.' "$work/proxy.log"; then
  fail "a token appears in the proxy's debug log"
fi
echo "e2e: ok   no token in the proxy's debug log"
echo "e2e: all checks passed"
