"""Write tests/data/pyradiomics_breast1_reference.json from pyradiomics' own baseline files.

pyradiomics' test suite checks every feature of its test cases against ``data/baseline/baseline_<class>.csv``
(one column per case, with the settings used in ``diagnostics_Configuration_Settings``). Those files are
in the source distribution but are not installed with the package, so the breast1 column is copied here,
with the sdist's SHA-256 and git revision, and the settings. Usage::

    pip download --no-deps --no-binary :all: pyradiomics==3.0.1 -d /tmp/sdist
    python scripts/pyradiomics_reference.py /tmp/sdist/pyradiomics-3.0.1.tar.gz
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

CASE = "breast1"
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "pyradiomics_breast1_reference.json"


def main(sdist: str) -> None:
    blob = Path(sdist).read_bytes()
    values, settings, image_types, files = {}, None, None, []
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        version_py = tar.extractfile(members["radiomics/_version.py"]).read().decode()
        revision = re.search(r'"full-revisionid": "([0-9a-f]{40})"', version_py).group(1)
        version = re.search(r'"version": "v?([^"]+)"', version_py).group(1)
        for name in sorted(members):
            if not re.fullmatch(r"data/baseline/baseline_[a-z0-9A-Z]+\.csv", name):
                continue
            rows = list(csv.reader(io.StringIO(tar.extractfile(members[name]).read().decode())))
            if CASE not in rows[0]:
                continue
            col = rows[0].index(CASE)
            files.append(name)
            for r in rows[1:]:
                if r[0] == "diagnostics_Configuration_Settings":
                    settings = settings or ast.literal_eval(r[col])
                elif r[0] == "diagnostics_Configuration_EnabledImageTypes":
                    image_types = image_types or ast.literal_eval(r[col])
                elif not r[0].startswith("diagnostics_") and r[col] != "":
                    values[r[0]] = float(r[col])
    doc = {
        "case": CASE,
        "source": {"package": "pyradiomics", "version": version, "git_revision": revision,
                   "sdist": Path(sdist).name, "sdist_sha256": hashlib.sha256(blob).hexdigest(),
                   "files": files, "column": CASE,
                   "tolerance_in_library_tests": "relative difference < 0.03 (tests/testUtils.py, checkResult)"},
        "image_sha256": "0e8b668f3ce9b9aacff20dc3c216866f43069ff96b269fb45b76f5e205a431e2",
        "mask_sha256": "07085bb0e36a956de5bd1c1c1b5f8bdf2ce80952125b13cbd352412c108c8950",
        "image_types": image_types, "settings": settings, "values": values,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"{OUT}: {len(values)} reference values from {len(files)} files")


if __name__ == "__main__":
    main(sys.argv[1])
