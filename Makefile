# exprvm: `make demo` trains the char-RNN example, `make test` runs the test suite.
# Both install what they need first.
PY ?= python3
STAMP := .make/installed

.PHONY: install test demo bench cuda clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.c csrc/*.h exprvm/kernels/build_*.py)
	bash .ci/system-deps.sh
	$(PY) -m pip install -q -e ".[test,examples,mpi]"
	@mkdir -p .make && touch $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) examples/char_rnn.py --minutes 1 --out out

bench: install
	$(PY) benchmarks/run_all.py

cuda: install
	$(PY) -m exprvm.kernels.build_cuda

clean:
	rm -rf .make build out *.egg-info exprvm/kernels/*.so exprvm/kernels/_ev_c*.c
