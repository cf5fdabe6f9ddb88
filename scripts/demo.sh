#!/usr/bin/env bash
# A local demo of kube-audience-proxy, no cluster needed: starts a stand-in API server and a
# stand-in scrape target on 127.0.0.1, runs the proxy between them, and sends one plain-HTTP
# and one HTTPS request through it with curl, showing the audience the target saw.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo curl; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is needed" >&2; exit 1; }
done

echo "building (debug) ..."
cargo build --quiet --bin kube-audience-proxy --example stand_in_apiserver --example stand_in_target
bin=target/debug
SCRIPT=demo
# shellcheck source=scripts/common.sh
. scripts/common.sh

start_stand_ins 200 --namespace demo --service-account prometheus

proxy_port=$(free_port)
"$bin/kube-audience-proxy" \
  --insecure-listen-address="127.0.0.1:$proxy_port" \
  --apiserver="$api_url" \
  --apiserver-ca-file="$work/api/ca.crt" \
  --apiserver-token-file="$work/api/token" \
  --service-account=prometheus \
  --namespace=demo \
  --ca-file-destination="$work/proxy-ca.crt" \
  --upstream-ca-file="$work/tls/target-ca.crt" \
  --log-level=debug >"$work/proxy.log" 2>&1 &
pids+=($!)
wait_for "$work/proxy.log" 'msg="listening"' >/dev/null

echo
echo "== plain HTTP: curl --proxy http://127.0.0.1:$proxy_port http://$http_target/metrics?kubernetes-audience=demo-http"
curl -sS --proxy "http://127.0.0.1:$proxy_port" \
  "http://$http_target/metrics?kubernetes-audience=demo-http" | head -n 2
echo
echo "== HTTPS through CONNECT: curl --proxy … --cacert proxy-ca.crt https://localhost:$https_port/metrics?kubernetes-audience=demo-https"
curl -sS --proxy "http://127.0.0.1:$proxy_port" --cacert "$work/proxy-ca.crt" \
  "https://localhost:$https_port/metrics?kubernetes-audience=demo-https" | head -n 2
echo
echo "== the proxy's log (debug level; no token appears in it)"
cat "$work/proxy.log"
