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
