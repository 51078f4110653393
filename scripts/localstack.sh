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

# The pinned LocalStack starts on Python 3.13; on 3.12.1 it fails at start
# ("No component plugins found in namespace localstack.runtime.components").
is_313='import sys; sys.exit(sys.version_info[:2] != (3, 13))'

python_313() {
  local candidates=(python3.13)
  if command -v pyenv >/dev/null; then
    candidates+=("$(pyenv root)"/versions/3.13*/bin/python)
  fi
  for p in "${candidates[@]}"; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c "$is_313" 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

install() {
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$is_313" 2>/dev/null &&
    "$venv/bin/python" -c 'import localstack' 2>/dev/null; then
    return 0
  fi
  local python
  python=$(python_313) || { echo "LocalStack needs Python 3.13 (python3.13 on PATH, or pyenv's 3.13)" >&2; exit 1; }
  echo "installing LocalStack into $venv with $python…"
  rm -rf "$venv"
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
