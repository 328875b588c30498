# shellcheck shell=bash disable=SC2154 # variables come from the sourcing script
# Shared by scripts/bench and scripts/soak (sourced, not run). Expects `repo` (the repository
# root, the current directory), `work` (this run's folder under target/) and `log_prefix`.
# Every process started here is recorded in `started` and stopped by `stop_all` (the callers'
# EXIT trap).

log() { printf '%s: %s\n' "$log_prefix" "$*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}

started=()
stop_pid() { # SIGTERM, then SIGKILL after $2 seconds (default 10)
  local pid=$1 grace=${2:-10} i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop within ${grace}s of SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
stop_all() {
  local i
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    stop_pid "${started[$i]}" 5
  done
  started=()
}

# Installs what is missing (Debian): nginx and haproxy for the comparison, curl for smoke tests,
# iproute2 for ss, util-linux for taskset.
need_packages() {
  local missing=() p
  for p in "$@"; do
    case $p in
      nginx) command -v nginx >/dev/null 2>&1 || missing+=(nginx-light) ;;
      haproxy) command -v haproxy >/dev/null 2>&1 || missing+=(haproxy) ;;
      ss) command -v ss >/dev/null 2>&1 || missing+=(iproute2) ;;
      taskset) command -v taskset >/dev/null 2>&1 || missing+=(util-linux) ;;
      *) command -v "$p" >/dev/null 2>&1 || missing+=("$p") ;;
    esac
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]} (apt-get)"
  [[ $(id -u) == 0 ]] || fail "need root to apt-get install ${missing[*]} (or install them first)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# The release binary and the load generator.
build() {
  log "cargo build --release (ssp and examples/loadgen)"
  cargo build --release --bin ssp --example loadgen >&2 || fail "cargo build --release failed"
  local tgt=${CARGO_TARGET_DIR:-$repo/target}
  ssp_bin=${BENCH_SSP_BIN:-$tgt/release/ssp} # BENCH_SSP_BIN: e.g. an unstripped build to profile
  loadgen_bin=$tgt/release/examples/loadgen
  [[ -x $ssp_bin && -x $loadgen_bin ]] || fail "no $ssp_bin or $loadgen_bin after the build"
}

port_free() { [[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; } # (TIME-WAIT sockets do not matter)
wait_listening() { # port pid name
  local i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$2" 2>/dev/null || fail "$3 exited before listening on $1 (see $work/*.log)"
    [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]] && return 0
    sleep 0.1
  done
  fail "$3 is not listening on $1 after 30 s"
}

# fill TEMPLATE OUT: replaces @PORT@ @PPORT@ @PKI@ @WORK@ @WORKERS@ @ADMIN@.
fill() {
  sed -e "s|@PORT@|${port:-}|g" -e "s|@PPORT@|$pport|g" -e "s|@PKI@|$pki|g" \
    -e "s|@WORK@|$work|g" -e "s|@WORKERS@|${workers:-1}|g" -e "s|@ADMIN@|${admin:-}|g" -e "s|@SYNC@|${sync:-batch}|g" \
    -e "s|@POOL@|${pool:-32}|g" "$1" >"$2"
}

# A process and its children (nginx: master + worker).
family() {
  local pid=$1
  echo "$pid"
  pgrep -P "$pid" 2>/dev/null || true
}
# CPU seconds (user + system) used so far by the given pids, from /proc/PID/stat.
cpu_of() {
  local total=0 p t
  for p in "$@"; do
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
    total=$((total + ${t:-0}))
  done
  awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }'
}
# Summed VmRSS (KiB) of the given pids.
rss_of() {
  local total=0 p r
  for p in "$@"; do
    r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || r=0
    total=$((total + ${r:-0}))
  done
  echo "$total"
}
# RSS once it stops moving: three reads 0.5 s apart within 0.5 % (at most 20 s).
settled_rss() {
  local a b c i
  a=$(rss_of "$@")
  sleep 0.5
  b=$(rss_of "$@")
  for ((i = 0; i < 40; i++)); do
    sleep 0.5
    c=$(rss_of "$@")
    if awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN { mx = a; mn = a; if (b > mx) mx = b; if (c > mx) mx = c;
      if (b < mn) mn = b; if (c < mn) mn = c; exit !(mx - mn <= mx * 0.005) }'; then
      break
    fi
    a=$b b=$c
  done
  echo "$c"
}

# jget KEY FILE: a number or string field of the loadgen's one-line JSON.
jget() { grep -o "\"$1\":[^,}]*" "$2" | head -n 1 | cut -d: -f2- | tr -d '"'; }

# PKI bits the proxies need in their own shape: CRLs of both CAs in one PEM file (OpenSSL
# checks the CRL of every certificate in the chain); HAProxy's certificate + key in one file.
# Test keys from fixtures/pki, copied under target/ only.
pki_files() {
  cat "$pki/level1c.crl.pem" "$pki/root.crl.pem" >"$work/crls.pem"
  cat "$pki/ssp.pem" "$pki/ssp.key" >"$work/ssp-haproxy.pem"
  chmod 600 "$work/ssp-haproxy.pem"
}

# The provider: nginx, one worker, mutual TLS, a fixed JSON body. Pinned to $1 (CPU list).
start_provider() {
  mkdir -p "$work/tmp"
  fill "$repo/scripts/bench.d/provider-nginx.conf" "$work/provider-nginx.conf"
  port_free "$pport" || fail "port $pport is in use (set BENCH_PORT_BASE)"
  taskset -c "$1" nginx -e "$work/provider-error.log" -p "$work" -c "$work/provider-nginx.conf" \
    -g 'daemon off;' >"$work/provider.log" 2>&1 &
  provider_pid=$!
  started+=("$provider_pid")
  wait_listening "$pport" "$provider_pid" "the provider (nginx)"
}

# ssp with the bench config; $1 CPU list. Sets ssp_pid.
start_ssp() {
  mkdir -p "$work/audit"
  fill "$repo/scripts/bench.d/ssp.toml" "$work/ssp.toml"
  [[ -f $work/audit.key ]] || "$ssp_bin" audit keygen --out "$work/audit.key" >/dev/null
  "$ssp_bin" check --config "$work/ssp.toml" >"$work/ssp-check.log" 2>&1 ||
    { cat "$work/ssp-check.log" >&2; fail "ssp check refused the bench config"; }
  port_free "$port" || fail "port $port is in use (set BENCH_PORT_BASE)"
  RUST_LOG=${RUST_LOG:-warn} taskset -c "$1" "$ssp_bin" run --config "$work/ssp.toml" \
    >"$work/ssp.log" 2>&1 &
  ssp_pid=$!
  started+=("$ssp_pid")
  wait_listening "$port" "$ssp_pid" "ssp"
}

# "0-1,3" -> "0 1 3"
cpus_expand() {
  local part c parts cpus=()
  IFS=, read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then
      for ((c = ${part%-*}; c <= ${part#*-}; c++)); do cpus+=("$c"); done
    else
      cpus+=("$part")
    fi
  done
  echo "${cpus[@]}"
}
# CPU seconds the listed CPUs have been busy so far, from /proc/stat: user, system, irq,
# softirq, steal; not idle, iowait or nice (niced work such as a background `cargo fuzz` at
# nice 19 only soaks up idle time). With the processes' own CPU time this shows how much other
# work shared their cores.
busy_of_cpus() {
  local total=0 c
  for c in $(cpus_expand "$1"); do
    total=$((total + $(awk -v c="cpu$c" '$1 == c { print $2 + $4 + $7 + $8 + $9 }' /proc/stat)))
  done
  awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }'
}

# UTC time as the audit writes it, SECONDS from now (may be fractional).
utc_in() {
  date -u -d "@$(awk -v now="$(date +%s.%N)" -v s="$1" 'BEGIN { printf "%.3f", now + s }')" +%Y-%m-%dT%H:%M:%S.%3NZ
}

# ssp's own time per request between two UTC times: from its audit `res` records, the
# exchange's duration (admission to the last byte written) less the provider's time
# (forwarded to the response head). Prints "p50 / p99 / p99.9" in ms.
own_time() { # AUDIT-DIR FROM TO
  cat "$1"/*.jsonl | awk -v from="$2" -v to="$3" '
    /"type":"res"/ && match($0, /"ts":"[^"]*"/) {
      ts = substr($0, RSTART + 6, RLENGTH - 7)
      if (ts < from || ts > to) next
      if (!match($0, /"duration_ms":[0-9.]+/)) next
      d = substr($0, RSTART + 14, RLENGTH - 14)
      if (!match($0, /"upstream_ms":[0-9.]+/)) next
      print d - substr($0, RSTART + 14, RLENGTH - 14)
    }' | sort -n | awk '{ v[NR] = $1 }
    function at(q,  i) { i = int(q * NR); if (i < 1) i = 1; return v[i] }
    END { if (NR) printf "%.2f / %.2f / %.2f", at(0.5), at(0.99), at(0.999); else printf "n/a" }'
}
