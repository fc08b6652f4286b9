# Every target works on a fresh machine: the project venv (.venv) is built on demand
# and rebuilt only when setup.py or requirements-test.txt change.
# Fresh-machine commands (README): `make run` (main job), `make test` (what CI runs).

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(VPY) -m pytest -q -p no:cacheprovider

.PHONY: venv demo run test test-unit bench lint typecheck clean

venv: $(STAMP)

$(STAMP): setup.py requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --disable-pip-version-check -e . -r requirements-test.txt
	touch $@

# Main job (README): the demo - the storage hook, publisher and SIP transport publishing
# a scripted XCAP session to an embedded monitor, printed step by step (about 2 s).
demo: venv
	$(VPY) -m xcapdiff_ext.demo

# The xcap-diff document for the shipped examples (the engine alone).
run: venv
	$(VENV)/bin/xcapdiff diff examples/resource-lists-old.xml examples/resource-lists-new.xml \
		--previous-etag 7c1d0a2e-1 --new-etag 7c1d0a2e-2

# Everything CI must check, run in order by `make test` (and so by .ci/run).
# Append later suites (real peers, the Debian package test, the demo) to this list.
# Any non-zero exit fails the target, including pytest's 5 ("no tests ran").
TEST_SUITES := test-unit test-debian-python test-debian

test: $(TEST_SUITES)

test-unit: venv
	$(PYTEST) tests

# The unit suite on Debian 12's own python3-twisted and python3-lxml (what the Debian
# package depends on; test-unit has the newest from PyPI): /usr/bin/python3 with a
# --system-site-packages venv (.venv-debian).  pip adds only the test tools, constrained
# to the versions of everything the venv already sees, so it replaces no Debian module
# (the TLS tests use python3-openssl and python3-service-identity); the lint, typing and
# benchmark tools of requirements-test.txt are left out.  Root on Debian (apt-get).
DEB_VENV := .venv-debian
DEB_VPY := $(DEB_VENV)/bin/python
DEB_STAMP := $(DEB_VENV)/.installed
DEB_APT := python3-twisted python3-lxml python3-venv python3-openssl python3-service-identity
DEB_NOT_FOR_TESTS := ruff|mypy|lxml-stubs|xmldiff

.PHONY: test-debian-python debian-python-apt
test-debian-python: $(DEB_STAMP)
	@for pair in twisted:python3-twisted lxml:python3-lxml; do \
		mod=$${pair%%:*}; pkg=$${pair#*:}; \
		deb=$$(dpkg-query -W -f='$${Version}' $$pkg); deb=$${deb#*:}; deb=$${deb%-*}; \
		got=$$($(DEB_VPY) -c "import $$mod; print($$mod.__version__, $$mod.__file__)") || exit 1; \
		echo "== $$mod $$got (Debian $$pkg $$deb)"; \
		case "$$got" in "$$deb /usr/lib/python3/dist-packages/"*) ;; \
		*) echo "$$mod is not Debian's $$pkg $$deb" >&2; exit 1 ;; esac; \
	done
	$(DEB_VPY) -m pytest -q -p no:cacheprovider tests

# Checked on every run (cheap): apt-get update and install only when one is missing.
debian-python-apt:
	@missing=; for pkg in $(DEB_APT); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'install ok installed' \
			|| missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "== installing:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends $$missing; \
	fi

$(DEB_STAMP): setup.py requirements-test.txt | debian-python-apt
	rm -rf $(DEB_VENV)
	/usr/bin/python3 -m venv --system-site-packages $(DEB_VENV)
	$(DEB_VPY) -m pip list --disable-pip-version-check --format=freeze > $(DEB_VENV)/constraints.txt
	grep -viE '^($(DEB_NOT_FOR_TESTS)|twisted|lxml)([^a-z0-9_.-]|$$)' \
		requirements-test.txt > $(DEB_VENV)/requirements.txt
	$(DEB_VPY) -m pip install --disable-pip-version-check -c $(DEB_VENV)/constraints.txt \
		-r $(DEB_VENV)/requirements.txt
	$(DEB_VPY) -m pip install --disable-pip-version-check --no-deps -e .
	touch $@

# The Debian package openxcap-xcapdiff (debian/): builds it from a copy of the tree,
# lintian, installs it beside an equivs dummy openxcap, exercises it, purges it.
# Root on Debian 12 only (it installs and purges packages); about a minute.
.PHONY: test-debian
test-debian:
	bash tests/debian/test_package.sh

bench: venv
	$(VPY) benchmarks/diff_bench.py
	$(VPY) benchmarks/publisher_bench.py
	$(VPY) benchmarks/hook_bench.py

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
	rm -rf $(VENV) $(DEB_VENV) build *.egg-info
