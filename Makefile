# tf_skiprec — two commands do everything: `make train` and `make test`.
# Each (re)creates .venv from requirements.lock when the lock or pyproject changed, then runs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lock-installed
WORKDIR ?= runs/default
ARGS   ?=

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv train test lock serve clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "tf_skiprec needs Python 3.11, found " + sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
	  --config-settings editable_mode=compat -e .
	$(PY) -m pip check
	@touch $(STAMP)

## Train SkipRec on the built-in synthetic data, evaluate it, and write the work directory.
train: $(STAMP)
	$(PY) train.py --experiment=default --workdir=$(WORKDIR) $(ARGS)

## Run the test suite, each test file on one of TEST_WORKERS processes (pytest-xdist; a file's
## tests share its fixtures); TEST_WORKERS=0 runs them all in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

## Serve saved_models/skiprec (every version; requests without one get the latest) with the
## local PredictionService server: gRPC on :8500, REST on :8501. `make train` exports there.
## TF Serving's batching as production runs it:
##   make serve ARGS="--enable_batching --batching_parameters_file=serving/batching_parameters.txt"
serve: $(STAMP)
	$(PY) -m serving.server --model_name=skiprec --model_base_path=saved_models/skiprec \
	  --port=8500 --rest_api_port=8501 $(ARGS)

## Regenerate the lock from the current venv (after changing pyproject.toml pins).
lock: $(STAMP)
	$(PY) -m pip freeze --all --exclude-editable | grep -v -E '^(tf.skiprec|pip)==' > requirements.lock

clean:
	rm -rf $(VENV) runs
