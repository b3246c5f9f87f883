#!/usr/bin/env bash
# `make images`: build the platform and serving images (images/Containerfile) with buildah,
# from nothing but the package registries. Settings (environment):
#   VARIANT=cpu|cuda         torch's CPU wheel, or PyPI's CUDA build (several GB)   [cpu]
#   IMAGE_REGISTRY           where the images are named (and pushed by the user)   [ghcr.io/motioncontrol]
#   IMAGE_TAG                [the project's version; "-cpu" appended for VARIANT=cpu]
#   TORCH_WHEELS             a folder holding torch-2.13.0+cpu*.whl, mounted into the build
#                            instead of downloading from TORCH_INDEX_URL      [/opt/wheels if it has one]
#   IMAGES                   which to build                                      ["platform serving"]
#   BUILD_CA_BUNDLE          CA certificates pip inside the build trusts, for a TLS-intercepting
#                            proxy (mounted, never copied into an image)  [$PIP_CERT if set]
# The Containerfile says `FROM debian:bookworm-slim`; where no image registry is reachable (as
# on the project's CI machine), that base is made locally with mmdebstrap.
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=${VARIANT:-cpu}
REGISTRY=${IMAGE_REGISTRY:-ghcr.io/motioncontrol}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
suffix=""; [[ $VARIANT == cpu ]] && suffix=-cpu
TAG=${IMAGE_TAG:-$VERSION$suffix}
IMAGES=${IMAGES:-platform serving}
BASE=docker.io/library/debian:bookworm-slim

need() {  # Debian packages this script runs
  local missing=()
  for cmd in "$@"; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
  ((${#missing[@]} == 0)) && return
  echo "images: installing ${missing[*]} (Debian packages)"
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
}
need buildah mmdebstrap

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1 \
   && ! buildah pull -q "$BASE" >/dev/null 2>&1; then
  echo "images: no registry reachable for $BASE; making it with mmdebstrap (bookworm, minbase)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mmdebstrap --quiet --variant=minbase bookworm "$tmp/rootfs.tar"
  ctr=$(buildah from scratch)
  buildah add -q "$ctr" "$tmp/rootfs.tar" / >/dev/null
  buildah config --cmd /bin/bash "$ctr"
  buildah commit -q "$ctr" "$BASE" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

args=(--isolation chroot --layers -f images/Containerfile --build-arg "VARIANT=$VARIANT"
      --label "org.opencontainers.image.source=https://github.com/motioncontrol/motioncontrol"
      --label "org.opencontainers.image.licenses=Apache-2.0"
      --label "org.opencontainers.image.version=$VERSION"
      --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
ca=${BUILD_CA_BUNDLE:-${PIP_CERT:-}}
if [[ -n $ca ]]; then
  args+=(--volume "$ca:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
fi
wheels=${TORCH_WHEELS:-/opt/wheels}
if [[ $VARIANT == cpu ]] && compgen -G "$wheels/torch-2.13.0+cpu*.whl" >/dev/null; then
  args+=(--volume "$wheels:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels)
fi

for image in $IMAGES; do
  name=$REGISTRY/motioncontrol:$TAG
  [[ $image == serving ]] && name=$REGISTRY/motioncontrol-serving:$TAG
  echo "images: building $name (target $image, $VARIANT)"
  start=$SECONDS
  log=.local/images/$image-$VARIANT.log
  mkdir -p "$(dirname "$log")"
  if ! buildah bud "${args[@]}" --target "$image" -t "$name" \
       --label "org.opencontainers.image.title=motioncontrol-$image" . >"$log" 2>&1; then
    tail -25 "$log"
    echo "images: building $name failed; the whole log: $log" >&2
    exit 1
  fi
  size=$(buildah images --format '{{.Size}}' "$name" | head -1)
  echo "images: $name built in $((SECONDS - start)) s, $size"
done
