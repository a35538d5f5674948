"""Fail unless a tier ran: at least one test, none skipped, none failed (one junit file)."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

report = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/integration.xml")
if not report.exists():
    sys.exit(f"check_junit: {report} is missing: the {report.stem} tier did not run.")
totals = {"tests": 0, "skipped": 0, "failures": 0, "errors": 0}
for suite in ET.parse(report).getroot().iter("testsuite"):
    for key in totals:
        totals[key] += int(suite.get(key, 0))
print(
    f"{report.stem} tier: "
    + "{tests} tests, {failures} failed, {errors} errors, {skipped} skipped".format(**totals)
)
if totals["tests"] == 0:
    sys.exit(f"check_junit: the {report.stem} tier collected no test.")
if totals["skipped"]:
    sys.exit(f"check_junit: {report.stem} tests were skipped; CI requires every one to run.")
if totals["failures"] or totals["errors"]:
    sys.exit(f"check_junit: {report.stem} tests failed.")
