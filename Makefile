# Two commands matter: `make demo` and `make test`. Both start from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
OUT ?= runs/demo

.PHONY: demo test install data bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and on its own: pip takes the build this machine caps, without a second resolve
	$(BIN)/python -m pip install -q "torch>=2.3" "torchvision>=0.18"
	# the hf extra too, so the Hugging Face tests (tests/test_hf.py, the support matrix) run rather than skip
	$(BIN)/python -m pip install -q -e ".[test,hf]"
	touch $(STAMP)

data:
	@if [ -n "$$SEELIKE_DATA" ] || [ -f $(FMNIST) ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null); \
	else \
		echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist', or set SEELIKE_DATA to a folder with its IDX .gz files; otherwise seelike downloads it with torchvision."; \
	fi

demo: install data
	$(BIN)/seelike demo --out $(OUT)

test: install data
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/cka_speed.py

clean:
	rm -rf $(VENV) runs
