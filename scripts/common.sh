# Shell functions shared by the scripts in this directory; sourced, never run. The sourcing
# script sets SCRIPT (its name, for messages) first. Provides a work directory that is
# removed on exit together with every process recorded in `pids`.

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Waits up to 15 s until FILE has a line matching the extended regex PATTERN, and prints what
# follows the match on that line.
wait_for() {
  local file=$1 pattern=$2 line
  for _ in $(seq 150); do
    if line=$(grep -m1 -E "$pattern" "$file" 2>/dev/null); then
      echo "$line" | sed -E "s/.*$pattern//"
      return 0
    fi
    sleep 0.1
  done
  echo "$SCRIPT: timed out waiting for '$pattern' in $file:" >&2
  cat "$file" >&2
  return 1
}

# A loopback port nobody listens on right now.
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "$SCRIPT: no free loopback port found" >&2
  return 1
}

# Starts the stand-in API server (ARGS... go to it: namespace, service account, token
# lifetime) and two stand-in targets with BODY_BYTES bodies, one HTTP and one HTTPS, from
# $bin. Sets api_url (its files are under $work/api), http_target (ADDR), https_port and
# https_target (localhost:PORT, certificate signed by $work/tls/target-ca.crt).
start_stand_ins() { # BODY_BYTES ARGS...
  local body_bytes=$1
  shift
  "$bin/examples/stand_in_apiserver" --listen 127.0.0.1:0 --dir "$work/api" "$@" \
    >"$work/api.out" 2>&1 &
  pids+=($!)
  api_url=$(wait_for "$work/api.out" "^url=")

  "$bin/examples/stand_in_target" --listen 127.0.0.1:0 --body-bytes "$body_bytes" \
    >"$work/http.out" 2>&1 &
  pids+=($!)
  http_target=$(wait_for "$work/http.out" "^listening ")

  mkdir -p "$work/tls"
  "$bin/examples/stand_in_target" --listen 127.0.0.1:0 --body-bytes "$body_bytes" \
    --tls-cert-dir "$work/tls" >"$work/https.out" 2>&1 &
  pids+=($!)
  https_port=$(wait_for "$work/https.out" "^listening " | sed 's/.*://')
  https_target="localhost:$https_port"
}
