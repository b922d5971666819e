import subprocess
import sys

import stnkit
from stnkit import fields


def test_lazy_submodule():
    code = ("import sys, stnkit; print('stnkit.fields' in sys.modules); stnkit.fields.warp; "
            "print('stnkit.fields' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
    assert stnkit.fields is fields


def test_public_api():
    for name in fields.__all__:
        assert hasattr(fields, name), name
    assert "fields" in stnkit.__all__
