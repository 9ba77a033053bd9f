#!/usr/bin/env bash
# Installs the real v1 client (PyPI's tensorrtserver 1.11.0) into a venv of
# its own, with the libssl 1.1 its librequest.so needs, under one cache
# folder (default: <repo>/.v1client, gitignored). Idempotent: a finished
# install leaves a stamp and later runs return at once.
#
#   tests/v1client/setup.sh [CACHE_DIR]
#
# Afterwards: CACHE_DIR/venv/bin/python runs the client, with
# LD_LIBRARY_PATH=CACHE_DIR/libssl/usr/lib/x86_64-linux-gnu (see
# tests/v1client/test_v1_client.py, which sets both).
#
# Why these pins: the client uses np.object
# (numpy<1.24) and old generated protobuf modules (protobuf 3.20.3, pure
# Python); librequest.so links libssl.so.1.1, which Debian 12 no longer
# ships, so Debian 11's libssl1.1 is downloaded with apt through a one-off
# source list on the machine's own Debian mirror and unpacked, never
# installed.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${1:-${V1CLIENT_DIR:-$repo/.v1client}}"
stamp_text="tensorrtserver==1.11.0 numpy==1.23.5 protobuf==3.20.3 future libssl1.1/bullseye"
python="${PYTHON:-python3}"

if [[ -f "$cache/ready" && "$(cat "$cache/ready")" == "$stamp_text" ]]; then
  exit 0
fi
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
echo "v1 client: setting up in $cache"

# -- the venv ----------------------------------------------------------------
if [[ ! -x "$cache/venv/bin/python" ]]; then
  "$python" -m venv "$cache/venv"
fi
"$cache/venv/bin/pip" install --quiet --disable-pip-version-check \
  "tensorrtserver==1.11.0" "numpy==1.23.5" "protobuf==3.20.3" future

# -- libssl 1.1 from Debian bullseye ------------------------------------------
libdir="$cache/libssl/usr/lib/x86_64-linux-gnu"
if [[ ! -f "$libdir/libssl.so.1.1" ]]; then
  # The mirror this machine's apt already uses (deb822 or one-line lists).
  mirror="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
            | grep -v -- '-security' | head -n1 || true)"
  if [[ -z "$mirror" ]]; then
    mirror="$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
              | sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}' \
              | grep -v -- '-security' | head -n1 || true)"
  fi
  if [[ -z "$mirror" ]]; then
    echo "v1 client: no Debian mirror found in /etc/apt; cannot fetch libssl1.1" >&2
    exit 1
  fi
  apt_dir="$cache/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  echo "deb [signed-by=$keyring] $mirror bullseye main" > "$apt_dir/bullseye.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/bullseye.list"
            -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$apt_dir/lists"
            -o "Dir::Cache=$apt_dir/cache"
            -o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" -qq update
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download libssl1.1)
  deb="$(ls "$apt_dir"/debs/libssl1.1_*.deb | head -n1)"
  rm -rf "$cache/libssl"
  dpkg -x "$deb" "$cache/libssl"
fi

# -- check it imports -----------------------------------------------------------
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  "$cache/venv/bin/python" -c "from tensorrtserver.api import InferContext, ServerStatusContext"
echo "$stamp_text" > "$cache/ready"
echo "v1 client: ready ($cache)"
