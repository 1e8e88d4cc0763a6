# syntax=docker/dockerfile:1
# The artifact image: `docker run --gpus all artifact` runs `make paper`; `... artifact make smoke` kicks the tires.
# Thin on purpose: everything it runs (assets fetch/verify, the entrypoint) also runs and is tested outside it.
# Build args: ASSETS (comma list from docker/assets.json, or "none"), IMAGE_ID (recorded in every result).
# The CUDA base is pinned by tag and digest; `make docker-pin` (docker/pin.sh base) re-resolves the digest.

# ---- runtime: OS, TeX Live, Python and the hash-pinned Python stack (no project code: cached across edits) ----
FROM nvidia/cuda:13.0.2-base-ubuntu24.04@sha256:2ab6381d970b211fb93853796dc6707eb8a72575a375c422b17cf4d8b2641701 AS runtime

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates python3 python3-venv make git \
      latexmk texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended lmodern \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/opt/hf \
    HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1

COPY docker/requirements-cuda.lock /tmp/requirements-cuda.lock
RUN python3 -m venv /opt/venv \
 && pip install --require-hashes --no-deps -r /tmp/requirements-cuda.lock \
 && rm /tmp/requirements-cuda.lock

# The non-root user that runs everything (numeric ids: USER resolves without the image's passwd file).
RUN groupadd --gid 10001 longctx \
 && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash longctx \
 && install -d -o 10001 -g 10001 /opt/hf /opt/hf/hub /opt/longctx

# ---- assets: the pinned checkpoints and data, downloaded at their commit shas and hash-verified ----
# Only the modules `assets fetch` needs are copied, so code edits elsewhere do not re-download the weights.
# Assets the committed lock does not list file by file yet are checked against the Hub's own hashes at the
# pinned commit (LFS sha256, git blob sha1), and fetch writes their sha256 into docker/assets.lock.json.
FROM runtime AS assets
RUN install -d -o 10001 -g 10001 /opt/assets-tool /opt/assets-tool/docker
ARG ASSETS=pythia,qwen3,mlm,pg19,wikitext
USER 10001:10001
WORKDIR /opt/assets-tool
COPY --chown=10001:10001 src/longctx/__init__.py src/longctx/cli.py src/longctx/errors.py src/longctx/assets.py \
     src/longctx/atomic_files.py src/longctx/
COPY --chown=10001:10001 src/longctx/commands/__init__.py src/longctx/commands/assets.py src/longctx/commands/
COPY --chown=10001:10001 docker/assets.json docker/assets.lock.json docker/
RUN if [ "${ASSETS}" != "none" ]; then \
      HF_HUB_OFFLINE=0 PYTHONPATH=/opt/assets-tool/src \
        python -m longctx.commands.assets fetch --only "${ASSETS}" --lock docker/assets.lock.json \
          --manifest docker/assets.json; \
    fi

# ---- artifact: the project, the baked assets, a non-root user, the entrypoint ----
FROM runtime AS artifact
ARG IMAGE_ID=longctx:dev
ENV LONGCTX_IMAGE_ID=${IMAGE_ID}
COPY --from=assets --chown=10001:10001 /opt/hf/hub /opt/hf/hub
WORKDIR /opt/longctx
COPY --chown=10001:10001 . .
# The lock as fetch left it: every baked file's sha256, so `longctx assets verify` checks them offline.
COPY --from=assets --chown=10001:10001 /opt/assets-tool/docker/assets.lock.json docker/assets.lock.json
# The Makefile's setup stamp ($(VENV)/.installed) is made here, so `make` never tries to install (works offline).
RUN pip install --no-deps --no-build-isolation -e . \
 && touch /opt/venv/.installed
USER 10001:10001
ENTRYPOINT ["/opt/longctx/docker/entrypoint.sh"]
CMD ["make", "paper"]
