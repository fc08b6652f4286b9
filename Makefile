# Every target works on a fresh machine: the project venv (.venv) is built on demand
# and rebuilt only when setup.py or requirements-test.txt change.
# Fresh-machine commands (README): `make run` (main job), `make test` (what CI runs).

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(VPY) -m pytest -q -p no:cacheprovider

.PHONY: venv run test test-unit bench lint typecheck clean

venv: $(STAMP)

$(STAMP): setup.py requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --disable-pip-version-check -e . -r requirements-test.txt
	touch $@

# Main job (until `make demo` exists): the xcap-diff document for the shipped examples.
run: venv
	$(VENV)/bin/xcapdiff diff examples/resource-lists-old.xml examples/resource-lists-new.xml \
		--previous-etag 7c1d0a2e-1 --new-etag 7c1d0a2e-2

# Everything CI must check, run in order by `make test` (and so by .ci/run).
# Append later suites (real peers, the Debian package test, the demo) to this list.
# Any non-zero exit fails the target, including pytest's 5 ("no tests ran").
TEST_SUITES := test-unit test-debian

test: $(TEST_SUITES)

test-unit: venv
	$(PYTEST) tests

# The Debian package openxcap-xcapdiff (debian/): builds it from a copy of the tree,
# lintian, installs it beside an equivs dummy openxcap, exercises it, purges it.
# Root on Debian 12 only (it installs and purges packages); about a minute.
.PHONY: test-debian
test-debian:
	bash tests/debian/test_package.sh

bench: venv
	$(VPY) benchmarks/diff_bench.py
	$(VPY) benchmarks/publisher_bench.py

# mypy --strict on the pure XML modules (mypy.ini); part of lint, not of test.
# mypy.ini says which are --strict: the pure core.
TYPECHECK_MODULES := -p xcapdiff_ext.diff -m xcapdiff_ext.xmlsafe -m xcapdiff_ext.xcapdiff \
	-m xcapdiff_ext.errors -m xcapdiff_ext.config -m xcapdiff_ext.change -m xcapdiff_ext.changes \
	-m xcapdiff_ext.mi.codec -m xcapdiff_ext.mi.fairqueue \
	-m xcapdiff_ext.sip.message -m xcapdiff_ext.sip.digest -m xcapdiff_ext.sip.transaction \
	-m xcapdiff_ext.sip.publication

typecheck: venv
	$(VPY) -m mypy $(TYPECHECK_MODULES)

lint: venv typecheck
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
