# ColonDepth: two commands for a new user on Debian/Ubuntu with Python 3.11.
#   make demo   set everything up, then run the main job on its embedded default
#   make test   set everything up, then run the whole test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
GL_PACKAGES := libosmesa6 libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libopengl0
DEMO_OUT ?= out/demo

.PHONY: demo test setup system-deps clean

demo: setup
	$(BIN)/colondepth demo --out $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest -q

setup: system-deps $(VENV)/.installed

# Debian OpenGL libraries for offscreen rendering (OSMesa). Installed when run as root,
# otherwise a clear message names the packages.
system-deps:
	@missing=""; for p in $(GL_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "error: missing Debian packages for offscreen rendering:$$missing"; \
	    echo "fix: sudo apt-get install -y$$missing   (then rerun make)"; exit 1; \
	  fi; \
	fi

# pyproject.toml holds compatible ranges; constraints.txt the exact tested pins installed here.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "error: python3.11 not found; install Python 3.11 and rerun make"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	# torch first, at its pin, so nothing pulls a CUDA build.
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip check
	touch $@

clean:
	rm -rf $(VENV) out
