import subprocess
import sys


def test_import_is_light():
    code = (
        "import sys, stnkit, stnkit.transforms, stnkit.sampling, stnkit.modules;"
        "heavy = [m for m in ('lightning', 'pytorch_lightning', 'matplotlib', 'kornia') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api():
    import stnkit

    for name in stnkit.__all__:
        assert hasattr(stnkit, name), name
    assert stnkit.__version__
