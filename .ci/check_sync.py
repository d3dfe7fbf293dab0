"""Fail when `nbdev_clean` changes a notebook, `nbdev_export` changes the package, or README.md is not what nbs/index.ipynb makes.

Compares file contents before and after, so it works in a dirty checkout as well as in CI.
"""
import hashlib, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
bin_ = Path(sys.executable).parent


def snapshot(pattern):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.glob(pattern)}


def changed(pattern, cmd):
    before = snapshot(pattern)
    subprocess.run([str(bin_ / cmd)], cwd=root, check=True)
    after = snapshot(pattern)
    return sorted(str(p.relative_to(root)) for p in before.keys() | after.keys() if before.get(p) != after.get(p))


dirty = changed('nbs/**/*.ipynb', 'nbdev_clean')
if dirty:
    sys.exit('notebooks not clean (nbdev_clean changed them; commit the cleaned files):\n  ' + '\n  '.join(dirty))
stale = changed('artist_hotline/**/*.py', 'nbdev_export')
if stale:
    sys.exit('notebooks and library out of sync (nbdev_export changed them; commit the exported files):\n  ' + '\n  '.join(stale))
readme = subprocess.run([sys.executable, str(root / '.ci' / 'readme.py'), '--check'], cwd=root, capture_output=True, text=True)
if readme.returncode: sys.exit(readme.stderr.strip() or readme.stdout.strip())
print('notebooks clean, library in sync with them, README.md made from nbs/index.ipynb')
