"""`.ci/fetch_corpus.py`, which lays the real corpus out where there is none (GitHub's runners): its checksum list
is the corpus, every file has a pinned source, and a fetch from a local stand-in for GitHub builds the same tree."""
import asyncio, hashlib, os, re, subprocess, sys
from pathlib import Path

from aiohttp import web
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / '.ci'))
import fetch_corpus  # noqa: E402


def files(folder: Path) -> dict[str, str]:
    "Every file under `folder` and its SHA-256."
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob('*') if p.is_file()}


def test_checksums_are_the_corpus(corpus):
    "SHA256SUMS names every file of ../shared/corpus, and nothing else, each with its checksum; MANIFEST.md's copy is the corpus's."
    assert fetch_corpus.checksums() == files(corpus)
    assert (ROOT / '.ci/corpus/MANIFEST.md').read_bytes() == (corpus / 'MANIFEST.md').read_bytes()


def test_every_file_has_a_pinned_source():
    "Each file but MANIFEST.md comes from a GitHub repository at a full commit hash; --dry-run prints them all."
    sums = fetch_corpus.checksums()
    assert len(sums) >= 80 and set(fetch_corpus.LOCAL) == {'MANIFEST.md'}
    pinned = re.compile(r'https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+')
    for name in sums:
        if name not in fetch_corpus.LOCAL: assert pinned.fullmatch(fetch_corpus.url(name)), name
    assert fetch_corpus.url('fsdd/3_lucas_1.wav').endswith('/d6938f9bf1545aa66d8489fc9f1385a7abd64282/recordings/3_lucas_1.wav')
    assert fetch_corpus.url('fsdd/metadata.txt').endswith('/metadata.py')
    env = {k: v for k, v in os.environ.items() if k != 'CORPUS_BASE_URL'}
    out = subprocess.run([sys.executable, str(ROOT / '.ci/fetch_corpus.py'), '--dry-run', '/x/corpus'], capture_output=True, text=True, env=env, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == len(sums) and sum(bool(pinned.match(l)) for l in lines) == len(sums) - 1
    assert f'{fetch_corpus.url("misc/jfk.wav")} -> /x/corpus/misc/jfk.wav' in lines


def test_ci_fetches_the_corpus_before_the_tests():
    steps = yaml.safe_load((ROOT / '.github/workflows/test.yaml').read_text())['jobs']['test']['steps']
    runs = [s.get('run', '') for s in steps]
    fetch = next(i for i, r in enumerate(runs) if '.ci/fetch_corpus.py ../shared/corpus' in r)
    assert fetch < runs.index('make test')


async def test_fetch_lays_out_the_corpus(corpus, tmp_path):
    "From a local stand-in for GitHub: the corpus's tree exactly; run again, nothing is fetched; a file that is not what SHA256SUMS says is refused."
    served = {fetch_corpus.url(n)[len(fetch_corpus.BASE):]: corpus / n for n in fetch_corpus.checksums() if n not in fetch_corpus.LOCAL}
    asked, tampered = [], set()
    async def raw(request):
        asked.append(request.path)
        if request.path not in served: raise web.HTTPNotFound()
        data = served[request.path].read_bytes()
        return web.Response(body=data + b'!' if request.path in tampered else data)
    app = web.Application()
    app.router.add_get('/{path:.*}', raw)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, '127.0.0.1', 0).start()
    env = {**os.environ, 'CORPUS_BASE_URL': f'http://127.0.0.1:{runner.addresses[0][1]}'}
    async def run(dest):
        p = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / '.ci/fetch_corpus.py'), str(dest), env=env,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(p.communicate(), 120)
        return p.returncode, out.decode() + err.decode()
    try:
        code, said = await run(tmp_path / 'corpus')
        assert code == 0, said
        assert files(tmp_path / 'corpus') == files(corpus) and len(asked) == len(served)
        asked.clear()
        assert (await run(tmp_path / 'corpus'))[0] == 0 and asked == []  # every file already right: none fetched again
        tampered.add(next(p for p in served if p.endswith('/jfk.wav')))
        code, said = await run(tmp_path / 'partial')
        assert code == 1 and 'misc/jfk.wav' in said and 'SHA-256' in said, said
        assert not (tmp_path / 'partial/misc/jfk.wav').exists() and not (tmp_path / 'partial/MANIFEST.md').exists()
        assert (tmp_path / 'partial/fsdd/0_george_0.wav').exists()
    finally:
        await runner.cleanup()
