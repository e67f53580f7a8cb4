#!/usr/bin/env bash
# Fetch transformers' common model tests (ModelTesterMixin, ConfigTester) from the sdist on PyPI that matches the
# installed transformers, into .ci/cache/transformers-tests-<version> (or $CULTURECLIP_TRANSFORMERS_TESTS).
# tests/modeling/test_modeling_common.py would fetch them itself; doing it here makes a download failure visible
# before the test run starts.
set -euo pipefail
cd "$(dirname "$0")/.."
python tests/modeling/transformers_suite.py
