#!/usr/bin/env bash
# Container entrypoint: say where we are (fingerprint: GPU, driver, image id), what is baked in and what will
# run, then run it: `make paper` by default, or the command given (`docker run --gpus all artifact make smoke`).
# No GPU visible -> PROFILE=smoke unless PROFILE is set, with the reason. Never touches the network.
# Test hooks (tests/test_docker_files.py): LONGCTX_DEV_DIR (default /dev), LONGCTX_NVIDIA_SMI (default nvidia-smi).
set -euo pipefail

export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" \
       TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}" HF_HUB_DISABLE_TELEMETRY=1

dev_dir="${LONGCTX_DEV_DIR:-/dev}"
nvidia_smi="${LONGCTX_NVIDIA_SMI:-nvidia-smi}"

say() { printf '[entrypoint] %s\n' "$*"; }

# One word for the GPU situation: visible | no-toolkit | none.
gpu_state() {
  if command -v "$nvidia_smi" >/dev/null 2>&1 && "$nvidia_smi" -L >/dev/null 2>&1; then
    echo visible
  elif compgen -G "$dev_dir/nvidia[0-9]*" >/dev/null; then
    echo no-toolkit
  else
    echo none
  fi
}

if [ "$#" -eq 0 ]; then
  set -- make paper
fi

say "image: ${LONGCTX_IMAGE_ID:-unknown (not built by make docker-build)}"
case "$(gpu_state)" in
  visible)
    say "GPU: $("$nvidia_smi" -L 2>/dev/null | head -n 4 | paste -sd ';' -)"
    ;;
  no-toolkit)
    say "WARNING: NVIDIA device nodes exist in $dev_dir but nvidia-smi/the driver libraries are not usable:"
    say "  the NVIDIA Container Toolkit is missing or misconfigured (install nvidia-container-toolkit, run"
    say "  'sudo nvidia-ctk runtime configure --runtime=docker', restart docker, then 'docker run --gpus all ...')."
    ;;
  none)
    say "no GPU is visible in this container. With an NVIDIA GPU on the host, run 'docker run --gpus all ...'"
    say "  (needs the NVIDIA Container Toolkit; check with: docker run --rm --gpus all <image> nvidia-smi)."
    ;;
esac
if [ "$(gpu_state)" != visible ]; then
  if [ -z "${PROFILE:-}" ]; then
    export PROFILE=smoke
    say "falling back to PROFILE=smoke: tiny models on CPU, every stage runs, NOT paper numbers."
  else
    say "PROFILE=$PROFILE was set explicitly; keeping it although no GPU is usable."
  fi
fi

say "fingerprint:"
longctx fingerprint || say "WARNING: 'longctx fingerprint' failed (exit $?); continuing"
say "baked assets (HF_HOME=${HF_HOME:-unset}):"
longctx assets verify --quick || say "some pinned assets are absent: the full profile cannot run here (smoke/timing can)"
say "profile: ${PROFILE:-chosen by longctx (full if the assets and a GPU are present, else smoke)}"
say "running: $*"
exec "$@"
