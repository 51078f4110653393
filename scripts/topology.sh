# shellcheck shell=bash
# The local topology for bash (sourced by run.sh and e2e.sh): reads
# scripts/topology.txt (its format is described there) into
#   services           the binaries, in the file's order (callers first)
#   port[binary.kind]  each listener's port, kind http, grpc or admin ("-": none)
#   calls[binary]      VARIABLE=binary,... (empty: none)
# and topology_env prints one binary's listen addresses and the URLs of what
# it calls, one VARIABLE=value a line.

declare -gA port calls
services=()
while read -r name http grpc admin wiring; do
  case $name in '' | '#'*) continue ;; esac
  services+=("$name")
  port[$name.http]=$http port[$name.grpc]=$grpc port[$name.admin]=$admin
  calls[$name]=${wiring#-}
done <"$(dirname "${BASH_SOURCE[0]}")/topology.txt"

topology_env() { # binary
  local name=$1 kind call
  for kind in http grpc admin; do
    if [ "${port[$name.$kind]}" != - ]; then echo "${kind^^}_ADDR=127.0.0.1:${port[$name.$kind]}"; fi
  done
  local IFS=, # the calls are comma-separated
  for call in ${calls[$name]}; do echo "${call%%=*}=http://127.0.0.1:${port[${call#*=}.grpc]}"; done
}
