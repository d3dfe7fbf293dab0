"""Installs that fit each use: the lean cloud server (`pip install artist-hotline`) and the offline engines
(`[offline]`), each in a fresh virtual environment; how big, how long `serve` takes to answer /health, and what the
commands that need another extra say.

Run from the repository root (a few minutes: it installs from the package registry):

    .venv/bin/python bench/install.py                    # lean and offline
    .venv/bin/python bench/install.py --extras ''        # the lean install only

Per install: the environment's size on disk (and its five largest packages), the seconds from `artist-hotline serve`
to the first 200 from /health (with cloud keys for the lean install, which has no offline engines; none for
`[offline]`), and the first line each of `report`, `calibrate` and `demo` prints when its extra is missing. The goal
(exit status 0): the lean install serves with keys, is under half the size of the offline one, and every command that
lacks its extra says which extra to install. Writes bench/results/install.json.
"""
from __future__ import annotations

import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blackbox import code_version  # noqa: E402  (the sibling bench module)

ROOT = Path(__file__).resolve().parent.parent


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob('*') if f.is_file() and not f.is_symlink()) / 2**20


def largest(site: Path, n: int = 5) -> list[dict]:
    "The biggest top-level folders of site-packages."
    sizes = [(size_mb(d), d.name) for d in site.iterdir() if d.is_dir() and not d.name.endswith(('.dist-info', '__pycache__'))]
    return [dict(name=name, mb=round(mb, 1)) for mb, name in sorted(sizes, reverse=True)[:n]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def time_serve(venv: Path, env: dict, timeout: float = 120.) -> dict:
    "Seconds from starting `artist-hotline serve` to /health answering 200, and the engines it names."
    port, work = free_port(), Path(tempfile.mkdtemp(prefix='install-serve-'))
    env = dict(env, HOST='127.0.0.1', PORT=str(port), DATABASE_URL=f'sqlite:///{work}/calls.sqlite3', LOG_LEVEL='WARNING')
    t0 = time.monotonic()
    proc = subprocess.Popen([str(venv / 'bin' / 'artist-hotline'), 'serve'], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None: return dict(ok=False, why=f'exited {proc.returncode}: {proc.stdout.read()[-600:]}')
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2) as r:
                    if r.status == 200: return dict(ok=True, seconds=round(time.monotonic() - t0, 2), providers=json.load(r)['providers'])
            except OSError: pass
            time.sleep(0.1)
        return dict(ok=False, why=f'no 200 from /health within {timeout:g} s')
    finally:
        proc.terminate()
        try: proc.wait(15)
        except subprocess.TimeoutExpired: proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def says(venv: Path, args: list[str], env: dict) -> dict:
    "The exit status of a command run in the install, and its last line (of its errors when it failed)."
    work = Path(tempfile.mkdtemp(prefix='install-cmd-'))
    try:
        r = subprocess.run([str(venv / 'bin' / 'artist-hotline'), *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    finally: shutil.rmtree(work, ignore_errors=True)
    lines = (r.stderr if r.returncode else r.stdout).strip().splitlines()  # why it failed, or how it ended
    return dict(command=' '.join(args), exit=r.returncode, says=lines[-1] if lines else '')


def measure(extras: str, keep: bool) -> dict:
    venv = Path(tempfile.mkdtemp(prefix=f'install-{extras or "lean"}-'))
    env = {k: v for k, v in os.environ.items() if not k.startswith(('OPENAI_', 'ELEVENLABS_', 'TWILIO_', 'VIRTUAL_ENV'))}
    env['PIP_DISABLE_PIP_VERSION_CHECK'] = '1'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    t0 = time.monotonic()
    spec = f'{ROOT}[{extras}]' if extras else str(ROOT)
    subprocess.run([str(venv / 'bin' / 'pip'), 'install', '-q', spec], check=True, env=env)
    installed_s = time.monotonic() - t0
    site = next((venv / 'lib').glob('python3*/site-packages'))
    out = dict(extras=extras, spec=f"artist-hotline[{extras}]" if extras else 'artist-hotline', install_s=round(installed_s, 1),
               size_mb=round(size_mb(venv), 1), largest=largest(site))
    keys = dict(OPENAI_API_KEY='sk-install-bench', ELEVENLABS_API_KEY='xi-install-bench', ELEVENLABS_VOICE_ID='install-bench',
                OPENAI_BASE_URL='http://127.0.0.1:9/v1', ELEVENLABS_BASE_URL='http://127.0.0.1:9')  # nothing listens: start-up checks only warn
    out['serve'] = time_serve(venv, dict(env, **keys) if not extras else env)
    out['commands'] = [says(venv, a, env) for a in (['report', '--db', 'sqlite:///nothing.sqlite3'], ['calibrate', '.'], ['demo'])]
    if not keep: shutil.rmtree(venv, ignore_errors=True)
    else: out['venv'] = str(venv)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--extras', nargs='+', default=['', 'offline'], help="installs to measure ('' is the lean one)")
    ap.add_argument('--keep', action='store_true', help='keep the environments (their paths go in the result)')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'install.json'))
    a = ap.parse_args(argv)
    t0, runs = time.monotonic(), []
    for extras in a.extras:
        r = measure(extras, a.keep)
        runs.append(r)
        print(f"{r['spec']:<26} {r['size_mb']:>7.0f} MB  installed in {r['install_s']:.0f} s; serve: "
              + (f"/health after {r['serve']['seconds']:.1f} s ({', '.join(f'{k}={v}' for k, v in r['serve']['providers'].items())})"
                 if r['serve']['ok'] else f"FAILED ({r['serve']['why']})"), flush=True)
        print('   largest: ' + ', '.join(f"{p['name']} {p['mb']:.0f} MB" for p in r['largest']))
        for c in r['commands']: print(f"   artist-hotline {c['command']}: exit {c['exit']}: {c['says']}")
    by = {r['extras']: r for r in runs}
    lean, full = by.get(''), by.get('offline')
    goals = {}
    if lean:
        goals['lean_serves_with_keys'] = lean['serve']['ok']
        goals['lean_says_which_extra'] = all(c['exit'] == 2 and 'pip install' in c['says'] for c in lean['commands'])
    if lean and full: goals['lean_under_half_of_offline'] = lean['size_mb'] < full['size_mb'] / 2
    if full: goals['offline_serves_without_keys'] = full['serve']['ok']
    result = dict(bench='install', date=time.strftime('%Y-%m-%dT%H:%M:%S%z'), code=code_version(), python=sys.version.split()[0],
                  runs=runs, goals=goals, run_s=round(time.monotonic() - t0, 1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"goals: {goals}\nwrote {a.out}")
    return 0 if goals and all(goals.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
