"""What a deployment answers with travels with it: a calibrated turn.toml and persona files put in deploy/ reach the
image (its build context as Docker makes it, honouring .dockerignore, then the Dockerfile's COPY steps), its entrypoint
serves that turn.toml, compose mounts the folder where the image has it, and Fly builds that image. Docker cannot run
here, so the context and the image's files are made as Docker makes them."""
import json, os, re, shlex, shutil, subprocess, sys, tomllib
from pathlib import Path, PurePosixPath

import yaml

from artist_hotline.settings import ENV_NAMES, TurnSettings, turn_toml

ROOT = Path(__file__).resolve().parents[1]


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    "A .dockerignore's patterns as (re-included, regex), in order (Docker's rules: `*` and `?` stay inside a folder, `**` spans folders)."
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'): continue
        keep = line.startswith('!')
        pat = os.path.normpath(line.lstrip('!').strip()).lstrip('/')
        rx = re.escape(pat).replace(r'\*\*/', '(.*/)?').replace(r'/\*\*', '(/.*)?').replace(r'\*\*', '.*')
        rx = rx.replace(r'\*', '[^/]*').replace(r'\?', '[^/]')
        rules.append((keep, re.compile(rx + '$')))
    return rules


def ignored(path: str, rules) -> bool:
    "Whether Docker leaves `path` out: the last pattern matching it or a folder above it decides."
    parts = PurePosixPath(path).parts
    out = False
    for keep, rx in rules:
        if any(rx.match('/'.join(parts[:i])) for i in range(1, len(parts) + 1)): out = not keep
    return out


def build_context(root: Path) -> set[str]:
    "The files `docker build root` sends: everything under `root` that .dockerignore does not leave out."
    rules = ignore_rules((root / '.dockerignore').read_text()) if (root / '.dockerignore').exists() else []
    return {p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_file() and not ignored(p.relative_to(root).as_posix(), rules)}


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    "The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."
    text = re.sub(r'\\\n\s*', ' ', dockerfile)
    return [(m.group(1).upper(), m.group(2)) for m in re.finditer(r'^\s*(\w+)\s+(.*)$', text, re.M) if not m.group(0).lstrip().startswith('#')]


def build_image(ctx_root: Path, context: set[str], fs: Path) -> dict:
    "The Dockerfile's COPY steps carried out into `fs` (the image's /), from the context only; its ENV, ENTRYPOINT and CMD."
    image, workdir = {'env': {}}, '/'
    for key, args in instructions((ctx_root / 'Dockerfile').read_text()):
        if key == 'WORKDIR': workdir = os.path.join(workdir, args.strip())
        elif key == 'ENV': image['env'] |= dict(a.split('=', 1) for a in shlex.split(args))
        elif key in ('ENTRYPOINT', 'CMD'): image[key.lower()] = json.loads(args)
        elif key == 'COPY':
            *srcs, dest = shlex.split(args)
            dest = os.path.join(workdir, dest)
            for src in srcs:
                src = os.path.normpath(src)
                found = sorted(p for p in context if p == src or p.startswith(src + '/'))
                assert found, f'COPY {src}: not in the build context'
                for p in found:  # a folder's contents go into dest; a file goes to dest/ or is named dest
                    rel = p[len(src) + 1:] if p != src else os.path.basename(p)
                    target = fs / (os.path.join(dest, rel) if p != src or dest.endswith('/') else dest).lstrip('/')
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ctx_root / p, target)
            image.setdefault('copied', []).append((srcs, dest))
    return image


PAINTER = 'name = "Agnes the Painter"\nsystem_prompt = "You are Agnes, a painter."\ngreeting = "Agnes here. What are you painting?"\n'


def checkout(tmp: Path) -> Path:
    "A copy of this checkout's files (as git sees them: committed or new, not ignored), with deploy/ filled in and the files a developer has about."
    repo = tmp / 'repo'
    names = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, names.decode().split('\0')):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT / name, repo / name)
    calibrated = turn_toml(TurnSettings(hangover_ms=520, min_speech_ms=140), 'from artist-hotline calibrate')
    for name, text in {'deploy/turn.toml': calibrated, 'deploy/personas/agnes.toml': PAINTER, 'out/calibration/turn.toml': calibrated,
                       '.env': 'TWILIO_AUTH_TOKEN=secret\n', '.venv/bin/python': '', 'recordings/calls/CA1.wav': '', 'calls.sqlite3': ''}.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True); (repo / name).write_text(text)
    return repo


def start(fs: Path, image: dict, env: dict, cwd: Path) -> dict:
    "The image's ENTRYPOINT run with a command in place of `serve` that reads the settings and the persona as `serve` does."
    code = ('import json; from artist_hotline.settings import Settings; from artist_hotline.persona import load_persona, persona_dirs\n'
            's = Settings.from_env()\n'
            'p = load_persona(s.persona or None, dirs=persona_dirs(s.personas_dir))\n'
            'print(json.dumps({"turn_config": s.turn_config, "hangover_ms": s.call.turn.hangover_ms, "min_speech_ms": s.call.turn.min_speech_ms, "persona": p.name}))')
    at = lambda v: re.sub(r'(^|:)/app\b', lambda m: m.group(1) + str(fs / 'app'), v)  # the image's /app is fs/app here
    entry = [at(a) for a in image['entrypoint']]
    clean = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    r = subprocess.run(entry + [sys.executable, '-c', code], env=clean | {k: at(v) for k, v in image['env'].items()} | env,
                       cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_turn_toml_and_personas_reach_the_image(tmp_path):
    repo = checkout(tmp_path)
    context = build_context(repo)
    assert {'deploy/turn.toml', 'deploy/personas/agnes.toml', 'deploy/entrypoint.sh', 'Dockerfile', 'artist_hotline/server.py'} <= context
    assert not {p for p in context if p.split('/')[0] in ('out', '.venv', '.git', 'nbs', 'tests')} and '.env' not in context
    assert 'recordings/calls/CA1.wav' not in context and 'calls.sqlite3' not in context
    fs = tmp_path / 'image'
    image = build_image(repo, context, fs)
    assert (fs / 'app/deploy/turn.toml').read_text() == (repo / 'deploy/turn.toml').read_text()
    assert (fs / 'app/deploy/personas/agnes.toml').exists() and (fs / 'app/artist_hotline/server.py').exists()
    assert image['env']['PERSONAS_DIR'] == '/app/deploy/personas' and image['cmd'] == ['artist-hotline', 'serve']
    data = tmp_path / 'data'; data.mkdir()  # the container's working folder (/data)
    served = start(fs, image, {'PERSONA': 'agnes'}, data)
    assert served == {'turn_config': str(fs / 'app/deploy/turn.toml'), 'hangover_ms': 520, 'min_speech_ms': 140, 'persona': 'Agnes the Painter'}
    # TURN_CONFIG set (compose's .env, Fly's secrets) names another file: that one; a variable set still wins over the file
    other = tmp_path / 'other.toml'; other.write_text(turn_toml(TurnSettings(hangover_ms=600)))
    assert start(fs, image, {'TURN_CONFIG': str(other), 'MIN_SPEECH_MS': '80'}, data) | {'persona': None} == {
        'turn_config': str(other), 'hangover_ms': 600, 'min_speech_ms': 80, 'persona': None}
    (fs / 'app/deploy/turn.toml').unlink()  # no turn.toml in deploy/: the defaults, and the built-in persona
    assert start(fs, image, {'TURN_CONFIG': ''}, data) == {'turn_config': '', 'hangover_ms': TurnSettings().hangover_ms,
                                                           'min_speech_ms': TurnSettings().min_speech_ms, 'persona': 'Synthetic Jason'}


def test_dockerignore_as_docker_reads_it():
    rules = ignore_rules('.venv\n*.sqlite3\nrecordings/calls\n**/*.pyc\nout\n!out/keep.toml\n')
    assert ignored('.venv/bin/python', rules) and ignored('calls.sqlite3', rules) and not ignored('data/calls.sqlite3', rules)
    assert ignored('recordings/calls/x.wav', rules) and not ignored('recordings/demo.wav', rules)
    assert ignored('a/b/c.pyc', rules) and ignored('c.pyc', rules) and ignored('out/x.csv', rules) and not ignored('out/keep.toml', rules)
    assert not ignored('deploy/turn.toml', ignore_rules((ROOT / '.dockerignore').read_text()))


def test_compose_and_fly_take_the_deploy_folder():
    "Compose mounts ./deploy where the image copies it and names the same personas folder; Fly builds the image that carries it."
    steps = instructions((ROOT / 'Dockerfile').read_text())
    workdir = next(a for k, a in steps if k == 'WORKDIR')
    copied = [shlex.split(a) for k, a in steps if k == 'COPY']
    deploy_at = next(os.path.normpath(os.path.join(workdir, c[-1])) for c in copied if c[:-1] == ['deploy'])
    env = dict(a.split('=', 1) for k, a in steps if k == 'ENV' for a in shlex.split(a))
    hot = yaml.safe_load((ROOT / 'compose.yaml').read_text())['services']['hotline']
    assert f'./deploy:{deploy_at}:ro' in hot['volumes']
    assert hot['environment']['PERSONAS_DIR'] == env['PERSONAS_DIR'] == f'{deploy_at}/personas'
    assert json.loads(next(a for k, a in steps if k == 'ENTRYPOINT'))[-1] == f'{deploy_at}/entrypoint.sh'
    fly = tomllib.loads((ROOT / 'fly.toml').read_text())
    assert fly['build']['dockerfile'] == 'Dockerfile' and 'PERSONAS_DIR' not in fly.get('env', {}) and 'TURN_CONFIG' not in fly.get('env', {})
