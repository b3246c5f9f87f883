# The user's interface: thin wrappers over `motionctl`, each on the local defaults (MC_* env
# and .env override them). Every target depends on `setup`, which is idempotent and fast
# when nothing changed.
VENV   ?= .venv
BIN    := $(VENV)/bin
MC     := $(BIN)/motionctl
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup test test-images images lint demo doctor curate train-stage0 train-stage1 train-stage2 train-stage3 distill evaluate promote bench serve stack-up stack-down stack-status canary lock clean

help:  ## list the targets
	@grep -E '^[a-z0-9% -]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup:  ## create .venv and install everything (idempotent)
	@bash scripts/setup.sh

test: setup  ## run the unit and integration tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

images:  ## build the platform and serving images with buildah (VARIANT=cpu|cuda; docs/kubernetes.md)
	@bash scripts/build_images.sh

test-images: setup images  ## build the images, then smoke-test them (tests/images)
	$(BIN)/python -m pytest tests/images -o python_files='test_*.py' -q $(PYTEST_ARGS)

lint: setup  ## ruff over the code
	$(BIN)/ruff check models flows serving deploy motionctl tests scripts

demo: setup  ## the whole pipeline on the local defaults, then serve it and animate a photo
	@bash scripts/demo.sh

doctor: setup  ## check store, MLflow, offline models and tritonserver
	$(MC) doctor

curate: setup  ## curate the dataset (synthetic + mocap + real video) into the store
	$(MC) curate

train-stage0 train-stage1 train-stage2 train-stage3: train-stage%: setup  ## train one stage of the teacher
	$(MC) train --stage $*

distill: setup  ## distil the newest stage-3 teacher into a few-step student
	$(MC) distill

evaluate: setup  ## score the newest teacher and student against the baselines
	$(MC) evaluate

promote: setup  ## gates -> alias candidate (TO=champion moves champion; ROLLBACK=1 undoes)
	$(MC) promote $(if $(TO),--to $(TO)) $(if $(ROLLBACK),--rollback)

bench: setup  ## run the benchmarks in tests/bench, reports in reports/bench/
	$(BIN)/python -m pytest tests/bench -o python_files='bench_*.py' -s -q -p no:cacheprovider

serve: setup  ## serve the champion student with tritonserver on 127.0.0.1 (Ctrl-C stops)
	$(MC) serve

stack-up: setup  ## start MLflow (UI :5000), Prefect (UI :4200) and a Prefect worker; register the deployments
	$(MC) stack up

stack-down: setup  ## stop the processes stack-up started
	$(MC) stack down

stack-status: setup  ## show the state of the local stack
	$(MC) stack status

canary: setup  ## roll VERSION=N out on Kubernetes (canary, analysis, promote/rollback); DRY_RUN=1 prints the plan
	@test -n "$(VERSION)" || { echo "usage: make canary VERSION=N [DRY_RUN=1]"; exit 2; }
	$(MC) canary --version $(VERSION) $(if $(filter 1 true yes,$(DRY_RUN)),--dry-run)

lock: setup  ## rewrite the runtime and dev locks (requirements/*constraints.txt) from the venv
	$(BIN)/python requirements/lock.py

clean:  ## remove the venv and all local state (.local)
	rm -rf $(VENV) .local .pytest_cache .ruff_cache
