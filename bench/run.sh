#!/usr/bin/env bash
# Benchmarks of twisted-smtpd against aiosmtpd and twisted.mail.
#
#   bash bench/run.sh                 # W1-W5 table (bench/peers.py), about 15 minutes
#   bash bench/run.sh peers --reps 5 --workloads W2,W4
#   bash bench/run.sh data [--maildir]   # DATA throughput of one connection
#   bash bench/run.sh pipelining      # PIPELINING, EHLO, STARTTLS and AUTH costs
#   bash bench/run.sh chart           # docs/perf-concurrency.png
#   bash bench/run.sh peerschart RESULTS.json   # docs/perf-peers.png and its table
#   bash bench/run.sh pair --a SNAPSHOT --b SNAPSHOT [--workload W4]   # two servers at
#                                     # once on one vCPU: an A/B of their CPU per unit of
#                                     # work that the machine's drift cancels out of
#   bash bench/run.sh hotpaths [--tool py-spy]   # profiles of twisted-smtpd under W1-W4
#   bash bench/run.sh protocol [--instructions]   # the protocol code's CPU (or instructions,
#                                     # counted by Valgrind) per message and per connection,
#                                     # in memory, against twisted.mail.smtp
#   bash bench/run.sh fullcollection  # one full garbage collection of a started
#                                     # server, before and after its start-up heap is frozen
#   bash bench/run.sh maildirfloor [--sink-us N]   # what a durable Maildir delivery costs
#                                     # per message on this file system, without the network
#   bash bench/run.sh all             # all four, one after the other
#   bash bench/run.sh deliveries      # --sink, --maildir, --amqp, --webhook per message
#                                     # (with the checkout's .venv: pika, treq, RabbitMQ)
#
# Installs what is missing first: Debian's postfix package for smtp-source
# (the MTA is neither configured nor started) and a virtualenv outside the
# repository ($BENCH_VENV, default /tmp/twisted-smtpd-bench-venv) holding
# aiosmtpd, Twisted (for twisted.mail), matplotlib and twisted-smtpd's own
# dependencies. twisted-smtpd itself runs from this checkout through
# PYTHONPATH, or from $TWISTED_SMTPD_SOURCE when set. All traffic goes to
# 127.0.0.1; every run is bounded in count and time.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
export PATH="$PATH:/usr/sbin:/sbin"
export BENCH_VENV=${BENCH_VENV:-/tmp/twisted-smtpd-bench-venv}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v smtp-source >/dev/null; then
  echo "installing Debian's postfix package (for smtp-source)"
  as_root apt-get update -qq
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi

# The deliveries benchmark runs with the checkout's own virtualenv (pika,
# treq), not the peers' one.
if [ "${1:-}" = deliveries ]; then
  shift
  cd "$repo"
  exec "${DELIVERIES_PYTHON:-$repo/.venv/bin/python}" "$here/deliveries.py" "$@"
fi

py=${PYTHON:-python3}
if ! "$BENCH_VENV/bin/python" -c 'import aiosmtpd, twisted.mail.smtp, matplotlib, txaio, OpenSSL' 2>/dev/null; then
  echo "creating $BENCH_VENV"
  "$py" -m venv "$BENCH_VENV"
  # twisted-smtpd's run-time requirements, as setup.cfg lists them
  mapfile -t requires < <("$py" - "$repo/setup.cfg" <<'EOF'
import configparser, sys
c = configparser.ConfigParser()
c.read(sys.argv[1])
print("\n".join(r.strip() for r in c["options"]["install_requires"].splitlines() if r.strip()))
EOF
)
  "$BENCH_VENV/bin/pip" install -q --disable-pip-version-check aiosmtpd matplotlib "${requires[@]}"
fi

# Node's smtp-server for the "smtp-server" row, outside the repository.
export BENCH_NODE_DIR=${BENCH_NODE_DIR:-/tmp/peers-node}
if command -v npm >/dev/null && [ ! -f "$BENCH_NODE_DIR/node_modules/smtp-server/package.json" ]; then
  echo "installing smtp-server (npm) in $BENCH_NODE_DIR"
  mkdir -p "$BENCH_NODE_DIR"
  (cd "$BENCH_NODE_DIR" && { [ -f package.json ] || npm init -y >/dev/null; } &&
    npm install --silent --no-audit --no-fund smtp-server) || echo "smtp-server not installed: its row is skipped"
fi

# W5 holds thousands of connections open.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard" || true

cd "$repo"
bpy="$BENCH_VENV/bin/python"
what=${1:-peers}
[ $# -gt 0 ] && shift
case "$what" in
  peers) exec "$bpy" "$here/peers.py" "$@" ;;
  data) exec "$bpy" "$here/data_throughput.py" "$@" ;;
  pipelining) exec "$bpy" "$here/pipelining.py" "$@" ;;
  chart) exec "$bpy" "$here/chart.py" "$@" ;;
  peerschart) exec "$bpy" "$here/peerschart.py" "$@" ;;
  pair) exec "$bpy" "$here/pair.py" "$@" ;;
  hotpaths) exec "$bpy" "$here/hotpaths.py" "$@" ;;
  protocol)
    if [[ " $* " == *" --instructions "* ]] && ! command -v valgrind >/dev/null; then
      echo "installing Debian's valgrind package (for --instructions)"
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
    fi
    exec "$bpy" "$here/protocolcost.py" "$@" ;;
  fullcollection) PYTHONPATH="${TWISTED_SMTPD_SOURCE:-$repo}" exec "$bpy" "$here/fullcollection.py" "$@" ;;
  maildirfloor) PYTHONPATH="${TWISTED_SMTPD_SOURCE:-$repo}" exec "$bpy" "$here/maildirfloor.py" "$@" ;;
  all)
    "$bpy" "$here/peers.py"
    "$bpy" "$here/data_throughput.py" --maildir
    "$bpy" "$here/pipelining.py" --servers twisted-smtpd,aiosmtpd,twisted.mail
    "$bpy" "$here/chart.py"
    ;;
  *) echo "usage: bash bench/run.sh [peers|data|pipelining|chart|peerschart|pair|hotpaths|protocol|fullcollection|maildirfloor|deliveries|all] [options]" >&2; exit 2 ;;
esac
