"""Re-run the notebooks top to bottom in a Jupyter kernel, as "Run All" does, and keep their outputs.

`make notebooks` runs them all; `python .ci/notebooks.py 02_vad 12b_report` runs some. Each runs in
a fresh `python3` kernel from nbs/, the folder Jupyter starts it in. A notebook that fails is left as
it was and named at the end (exit 1). The rest are written with their outputs, what is random in
each run masked (`stable`: temp folders' names, loopback ports, simulated Twilio SIDs, stream tokens),
then `nbdev_clean`ed. It prints how many cells' text outputs changed, and fails when an output still
holds something that differs from run to run (`volatile`). Measured timings are the notebooks' to
show in a stable form (rounded, or as an order of magnitude).
"""
import argparse, re, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

root = Path(__file__).resolve().parents[1]
nbs = root / 'nbs'

RANDOM = [(re.compile(r'\btmp[a-z0-9_]{8}\b'), 'tmp…'),  # a folder from tempfile.mkdtemp()
          (re.compile(r'\b(127\.0\.0\.1|localhost):\d{4,5}\b'), r'\1:PORT'),  # a test server's port, given by the OS
          (re.compile(r'\b(AC|CA|MZ|SM|RE)(?!0{32})[0-9a-f]{32}\b'), r'\1…'),  # a simulated call's, stream's, message's SID
          (re.compile(r'\b1[7-9]\d{8}\.[\w-]{32}(?![\w-])'), 'EXPIRY.SIGNATURE')]  # a stream token (08_server)
# What must not be committed in an output: the checkout's path, the home folder, object addresses, and the above unmasked.
HOME = [re.escape(f'{Path.home()}/')] if str(Path.home()) != '/' else []
VOLATILE = re.compile('|'.join([re.escape(str(root)), *HOME, r'\bat 0x[0-9a-f]{6,}', r'/ipykernel_\d+/'] + [r.pattern for r, _ in RANDOM]))


def texts(o) -> dict:
    "An output's text parts by kind (stream text, text/plain, text/html, ...)."
    d = {k: v for k, v in o.get('data', {}).items() if k.startswith('text/')}
    if 'text' in o: d['stream'] = o['text']
    return {k: ''.join(v) if isinstance(v, list) else v for k, v in d.items()}


def stable(nb):
    "Mask in `nb`'s text outputs what is random in each run (`RANDOM`); the reader learns nothing from it."
    for c in nb.cells:
        for o in c.get('outputs', []):
            for k, v in texts(o).items():
                for r, mask in RANDOM: v = r.sub(mask, v)
                if k == 'stream': o['text'] = v
                else: o['data'][k] = v


def volatile(nb) -> list[str]:
    "Text in `nb`'s outputs that would differ on the next run, as 'cell N: text'."
    return [f'cell {i}: {m.group(0)}' for i, c in enumerate(nb.cells) for o in c.get('outputs', [])
            for v in texts(o).values() for m in VOLATILE.finditer(v)]


def shown(nb) -> list[list[dict]]:
    "Each cell's text outputs, to tell which changed."
    return [[texts(o) for o in c.get('outputs', [])] for c in nb.cells]


def run(path: Path, timeout: int) -> tuple[str, float, str, int]:
    "Execute the notebook at `path` in place; (name, seconds, error or '', cells whose text output changed)."
    t0 = time.monotonic()
    nb = nbformat.read(path, as_version=4)
    before = shown(nb)
    try:  # the kernel's own stderr (not the cells') is Jupyter's console log: left out
        NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(nbs)}}).execute(stderr=subprocess.DEVNULL)
    except CellExecutionError as e:
        return path.stem, time.monotonic() - t0, str(e).strip().splitlines()[-1], 0
    except Exception as e:  # a cell past --timeout, a kernel that died: this notebook fails, the others go on
        return path.stem, time.monotonic() - t0, f'{type(e).__name__}: {e}'.splitlines()[0], 0
    stable(nb)
    after = shown(nb)
    changed = sum(a != b for a, b in zip(before, after)) + abs(len(before) - len(after))
    nbformat.write(nb, path)
    return path.stem, time.monotonic() - t0, '', changed


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('names', nargs='*', help='notebooks to run (default: all in nbs/)')
    p.add_argument('--workers', type=int, default=1, help='notebooks run at once (more is faster, but the timings they measure then share the cores)')
    p.add_argument('--timeout', type=int, default=900, help='seconds a cell may take')
    a = p.parse_args()
    paths = [nbs / f'{n.removesuffix(".ipynb")}.ipynb' for n in a.names] or sorted(nbs.glob('[0-9i]*.ipynb'))
    if missing := [str(q) for q in paths if not q.exists()]: sys.exit(f'no such notebook: {", ".join(missing)}')
    failed = []
    try:
        with ProcessPoolExecutor(a.workers) as ex:
            for name, secs, err, changed in ex.map(run, paths, [a.timeout] * len(paths)):
                print(f'{name:<18} {secs:6.1f} s  {"FAILED: " + err if err else f"ok, {changed} cell(s) changed output"}', flush=True)
                if err: failed.append(name)
    finally:  # the notebooks written so far are cleaned even when the run is interrupted
        subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean')], cwd=root, check=True)
    unstable = {q.stem: v for q in paths if (v := volatile(nbformat.read(q, as_version=4)))}
    for name, v in unstable.items(): print(f'{name}: outputs that change from run to run:\n  ' + '\n  '.join(v[:5]))
    if failed or unstable: sys.exit(f'{len(failed)} notebook(s) failed, {len(unstable)} with unstable outputs')
    print(f'{len(paths)} notebooks run, outputs kept')


if __name__ == '__main__':
    main()
