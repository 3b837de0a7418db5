# Two commands do everything on a fresh machine:
#   make train   create .venv with the pinned stack if missing, then train on the built-in synthetic set
#   make test    the same set-up, then ruff and the test suite
# Extra training options: make train ARGS="model=r3d_18 trainer.epochs=5"
# The suite runs in TEST_WORKERS processes (pytest-xdist; 2 by default, the cores CI has; TEST_WORKERS=0 runs it in
# one process).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_WORKERS ?= 2

.PHONY: train test lint system-deps clean-data

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# torchcodec needs FFmpeg's shared libraries from the system (PyAV and decord bring their own); the report tests open
# report.html in Debian's headless Chromium.
system-deps:
	@missing=""; \
	ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so' || missing="$$missing ffmpeg"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing (apt-get install -y$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "note: missing$$missing; torchcodec and browser tests skip (install with: apt-get install -y$$missing)"; \
	  fi; \
	fi

train: $(STAMP)
	$(BIN)/python -m behavior.train $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check behavior tests

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(ARGS)

clean-data:
	rm -rf data/synthetic
