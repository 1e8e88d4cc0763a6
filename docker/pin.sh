#!/usr/bin/env bash
# Re-pin what the image depends on (needs network; run by hand, review the diff, commit):
#   docker/pin.sh base          resolve the CUDA base tag to its current digest and rewrite the Dockerfile's FROM
#   docker/pin.sh requirements  regenerate docker/requirements-cuda.lock (hashes) from requirements.lock
#   docker/pin.sh assets        resolve docker/assets.json into docker/assets.lock.json (commit shas, file sha256)
#   docker/pin.sh all           the three, in that order (what `make docker-pin` runs)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
LONGCTX="${LONGCTX:-.venv/bin/longctx}"

# The linux/amd64 manifest digest from `docker manifest inspect --verbose` (a list for multi-arch tags).
PICK_AMD64='import json, sys
entries = json.load(sys.stdin)
entries = entries if isinstance(entries, list) else [entries]
for e in entries:
    platform = e["Descriptor"].get("platform", {"os": "linux", "architecture": "amd64"})
    if (platform.get("os"), platform.get("architecture")) == ("linux", "amd64"):
        print(e["Descriptor"]["digest"])
        break'

pin_base() {
  local ref tag digest
  ref="$(grep -m1 -E '^FROM nvidia/cuda:' Dockerfile | awk '{print $2}')"
  tag="${ref%@*}"
  if docker buildx version >/dev/null 2>&1; then
    digest="$(docker buildx imagetools inspect "$tag" --format '{{json .Manifest.Digest}}' | tr -d '"')"
  else
    digest="$(docker manifest inspect --verbose "$tag" | "$PYTHON" -c "$PICK_AMD64")"
  fi
  [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "pin.sh: could not resolve a digest for $tag" >&2; exit 1; }
  sed -i "s|^FROM ${ref} |FROM ${tag}@${digest} |" Dockerfile
  echo "base image: ${tag}@${digest}"
}

pin_requirements() {
  local venv=/tmp/longctx-pin
  [ -x "$venv/bin/uv" ] || { "$PYTHON" -m venv "$venv" && "$venv/bin/pip" install --quiet uv; }
  {
    sed -n '1,5p' docker/requirements-cuda.lock
    "$venv/bin/uv" pip compile requirements.lock --generate-hashes --no-header --quiet \
      --python-version 3.12 --python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple
  } >docker/requirements-cuda.lock.new
  mv docker/requirements-cuda.lock.new docker/requirements-cuda.lock
  echo "wrote docker/requirements-cuda.lock"
}

pin_assets() {
  HF_HUB_OFFLINE=0 "$LONGCTX" assets lock
}

case "${1:-all}" in
  base) pin_base ;;
  requirements) pin_requirements ;;
  assets) pin_assets ;;
  all) pin_base && pin_requirements && pin_assets ;;
  *) echo "usage: docker/pin.sh [base|requirements|assets|all]" >&2; exit 2 ;;
esac
