# exprvm: `make demo` trains the char-RNN example, `make test` runs the test suite, `make docs`
# builds the documentation site (docs/_build/html; a warning is an error). Each installs what
# it needs first.
PY ?= python3
STAMP := .make/installed

.PHONY: install test test-deep demo bench cuda docs clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.c csrc/*.h exprvm/kernels/build_*.py)
	bash .ci/system-deps.sh
	$(PY) -m pip install -q -e ".[test,examples,mpi,docs,onnx,train]"
	@mkdir -p .make && touch $(STAMP)

test: install
	$(PY) -m pytest -q

# Property tests with fresh random examples, ten times as many (tests/conftest.py's
# "deep" profile); `make test` draws the same derandomized examples every run.
test-deep: install
	HYPOTHESIS_PROFILE=deep $(PY) -m pytest -q

demo: install
	$(PY) examples/char_rnn.py --minutes 1 --out out

bench: install
	$(PY) benchmarks/run_all.py

docs: install
	$(PY) -m sphinx -E -W --keep-going -b html -q docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

cuda: install
	$(PY) -m exprvm.kernels.build_cuda

clean:
	rm -rf .make build out docs/_build docs/api *.egg-info exprvm/kernels/*.so exprvm/kernels/_ev_c*.c
