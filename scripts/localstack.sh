#!/usr/bin/env bash
# LocalStack's SNS on 127.0.0.1:4566, on the host with no container (what the
# cluster uses, and the one emulator that sends real SubscriptionConfirmations
# and keeps MessageAttributes on HTTP delivery).
# Usage: scripts/localstack.sh install|start|stop
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-localstack
state=.localstack
port=4566

python_312_plus() {
  local candidates=(python3.13 python3.12)
  if command -v pyenv >/dev/null; then
    candidates+=("$(pyenv root)"/versions/3.1[23]*/bin/python)
  fi
  for p in "${candidates[@]}"; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

install() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import localstack' 2>/dev/null && return 0
  local python
  python=$(python_312_plus) || { echo "LocalStack needs Python 3.12 or newer (python3.12/3.13 or pyenv)" >&2; exit 1; }
  echo "installing LocalStack into $venv with $python…"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet 'localstack-core[runtime]==2026.3.0' 'cbor2<6' \
    'pyopenssl==25.1.0' 'cryptography>=45,<46' service_identity
}

up() { curl -sf "http://127.0.0.1:$port/_localstack/health" 2>/dev/null | grep -q '"sns"'; }

start() {
  if up; then echo "LocalStack already answers on :$port"; return 0; fi
  install
  mkdir -p "$state/vol" "$state/fs"
  GATEWAY_SERVER=hypercorn GATEWAY_LISTEN=127.0.0.1:$port LOCALSTACK_HOST=127.0.0.1:$port \
    SERVICES=sns,sqs LOCALSTACK_VOLUME_DIR="$PWD/$state/vol" FILESYSTEM_ROOT="$PWD/$state/fs" \
    DISABLE_EVENTS=1 nohup "$venv/bin/python" -m localstack.runtime.main >"$state/localstack.log" 2>&1 &
  echo $! >"$state/pid"
  for _ in $(seq 1 120); do
    if up; then echo "LocalStack SNS ready on 127.0.0.1:$port"; return 0; fi
    sleep 0.5
  done
  echo "LocalStack did not start; see $state/localstack.log" >&2
  tail -n 20 "$state/localstack.log" >&2
  exit 1
}

stop() {
  if [ -f "$state/pid" ]; then
    kill "$(cat "$state/pid")" 2>/dev/null || true
    rm -f "$state/pid"
  fi
}

case "${1:-start}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
