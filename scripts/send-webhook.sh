#!/usr/bin/env bash
# Sends one signed PETZI webhook (the example delivery) to the gateway.
# Usage: scripts/send-webhook.sh [ticket-number] [gateway-url]
set -euo pipefail
number=${1:-PETZI48213577}
url=${2:-http://127.0.0.1:8080}
# With several secrets (a rotation), sign with the first.
secret=${WEBHOOK_SECRET:-secret}
secret=${secret%%,*}
body='{"event": "ticket_created", "details": {"ticket": {"number": "'"$number"'", "type": "online_presale", "title": "Open-source concert night", "category": "Concert", "eventId": 4821, "event": "Case a Chocs", "cancellationReason": "", "sessions": [{"name": "Session at Sarl", "date": "2026-12-12", "time": "21:30:00", "doors": "20:30:00", "location": {"name": "Case a Chocs", "street": "Quai Philippe-Godet 20", "city": "Neuchatel", "postcode": "2000"}}], "promoter": "Jane Roe", "price": {"amount": "42.50", "currency": "CHF"}}, "buyer": {"role": "customer", "firstName": "John", "lastName": "Doe", "postcode": "2000"}}}'
t=$(date +%s)
sig=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.* //')
curl -sS "$url/webhook" -H 'Content-Type: application/json' -H 'Petzi-Version: 2' \
  -H "Petzi-Signature: t=$t,v1=$sig" --data-binary "$body"
echo
