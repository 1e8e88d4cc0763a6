# longctx: the verbs. `make paper` and `make test` set themselves up on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help
-include .env
export

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LONGCTX := $(VENV)/bin/longctx
STAMP := $(VENV)/.installed
PROFILE ?=
PROFILE_ARG := $(if $(PROFILE),--profile $(PROFILE),)
# Where paper/experiments/baseline measure cells (read by longctx from the environment; see README "Running on a
# cluster"): EXECUTOR=local (default) or slurm, JOBS=N cells at once (one GPU each), SLURM_* for the cluster.
EXECUTOR ?=
JOBS ?=

.PHONY: help setup texlive test test-fast test-compat lint smoke baseline experiments tables figures pdf paper check bench lock clean \
        docker-build docker-run docker-pin

help: ## list the verbs
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

setup: $(STAMP) ## create .venv and install the pinned dependencies

test: $(STAMP) ## run the test suite (CPU, no network)
	$(PY) -m pytest

test-fast: $(STAMP) ## the unit tests only: no end-to-end pipeline, no Slurm jobs
	$(PY) -m pytest -m "not e2e and not slurm"

TRANSFORMERS_MIN ?= 5.17.0
COMPAT_VENV ?= .venv-compat

test-compat: ## unit tests against the oldest supported transformers (TRANSFORMERS_MIN) in its own venv
	$(PYTHON) -m venv $(COMPAT_VENV)
	grep -vE '^(transformers|huggingface_hub|tokenizers|safetensors|accelerate|datasets)==' requirements.lock \
	  > $(COMPAT_VENV)/requirements.txt
	$(COMPAT_VENV)/bin/pip install --quiet -r $(COMPAT_VENV)/requirements.txt transformers==$(TRANSFORMERS_MIN) \
	  accelerate datasets
	$(COMPAT_VENV)/bin/pip install --quiet --no-deps -e .
	$(COMPAT_VENV)/bin/python -m pytest -p no:cacheprovider --ignore=tests/test_e2e_smoke.py -m "not slurm"  # the Slurm runs: make test

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check src tests

smoke: $(STAMP) ## the kick-the-tires run: every stage on tiny models, CPU, minutes
	$(MAKE) paper PROFILE=smoke

baseline: $(STAMP) ## the recompute baselines of the selected profile
	$(LONGCTX) run baseline $(PROFILE_ARG)

experiments: $(STAMP) ## run every plan of the selected profile through the result store
	$(LONGCTX) run all $(PROFILE_ARG)

tables: $(STAMP) ## generate NeurIPS/generated/*.tex from the result JSON
	$(LONGCTX) tables $(PROFILE_ARG)

figures: $(STAMP) ## generate the figures from the result JSON
	$(LONGCTX) figures $(PROFILE_ARG)

texlive: ## install TeX Live with apt when root and missing, else say what to install
	@scripts/ensure-texlive.sh

pdf: $(STAMP) texlive ## build NeurIPS/main.pdf from the generated files
	$(LONGCTX) paper build $(PROFILE_ARG)

paper: $(STAMP) texlive ## run what is missing or stale, then tables, figures and NeurIPS/main.pdf
	$(LONGCTX) paper all $(PROFILE_ARG)

check: $(STAMP) ## check every claim of the README's claims table against the selected profile's results
	$(LONGCTX) claims check $(PROFILE_ARG)

bench: $(STAMP) ## performance benchmarks (profile timing on GPU; small shapes on CPU)
	$(LONGCTX) bench all

lock: ## re-pin requirements.lock from a fresh venv (needs network)
	rm -rf /tmp/longctx-lock && $(PYTHON) -m venv /tmp/longctx-lock
	/tmp/longctx-lock/bin/pip install --quiet torch==2.13.0 -e .[dev]
	/tmp/longctx-lock/bin/pip freeze --exclude-editable | sed 's/+cpu//' > requirements.lock.new && mv requirements.lock.new requirements.lock

clean: ## remove generated tables, figures and the PDF (results are kept)
	rm -rf NeurIPS/generated/*.tex NeurIPS/generated/manifest.json NeurIPS/figures/*.pdf NeurIPS/main.pdf

IMAGE ?= longctx-artifact
IMAGE_TAG ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
ASSETS ?= pythia,qwen3,mlm,pg19,wikitext
DOCKER_GPUS ?= --gpus all
DOCKER_CMD ?=

# Also tagged plain `artifact`, so `docker run --gpus all artifact` works as the README says.
docker-build: ## build the image (ASSETS=pythia,qwen3,mlm,pg19,wikitext | none; needs network)
	docker build --build-arg ASSETS=$(ASSETS) --build-arg IMAGE_ID=$(IMAGE):$(IMAGE_TAG) \
	  -t $(IMAGE):$(IMAGE_TAG) -t $(IMAGE):latest -t artifact .

docker-run: ## run the image offline (make paper; DOCKER_CMD="make smoke"), copy main.pdf and results/ out
	docker rm -f longctx-run >/dev/null 2>&1 || true
	docker run --name longctx-run $(DOCKER_GPUS) --network none $(IMAGE):latest $(DOCKER_CMD)
	docker cp longctx-run:/opt/longctx/NeurIPS/main.pdf docker-main.pdf
	docker cp longctx-run:/opt/longctx/results docker-results

docker-pin: ## re-pin the CUDA base digest, the hashed Python lock and the asset lock (network; review, commit)
	docker/pin.sh all
