"""The real corpus (../shared/corpus) where there is none, as on GitHub's runners: every file from its public
source at a pinned commit, checked against .ci/corpus/SHA256SUMS, laid out as the workplace lays it out.

    python .ci/fetch_corpus.py ../shared/corpus      # what .github/workflows/test.yaml runs before the tests
    python .ci/fetch_corpus.py --dry-run             # the URLs, and where each file goes

A file already there with the right checksum is kept; a download whose checksum differs is refused (nothing is
written under its name) and the run fails. MANIFEST.md, the corpus's description, is not anyone's upstream file:
it is copied from .ci/corpus/MANIFEST.md, and written last, so a corpus that stopped half-way is not taken for
a whole one (tests look for MANIFEST.md). Standard library only: it runs before the project is installed.
"""
import argparse, hashlib, os, sys, time, urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUMS = HERE / 'corpus' / 'SHA256SUMS'
BASE = os.environ.get('CORPUS_BASE_URL', 'https://raw.githubusercontent.com')  # a test serves its own copy

# Each source repository at the commit whose blobs are byte for byte the corpus's files (git blob hashes compared).
REPOS = {  # name: (GitHub repository, commit, what the commit is)
    'fsdd': ('Jakobovski/free-spoken-digit-dataset', 'd6938f9bf1545aa66d8489fc9f1385a7abd64282', 'tag v1.0.10'),
    'pocketsphinx': ('cmusphinx/pocketsphinx', '511126b492dcb267cf30d49d631946d7b61a9530', 'tag v5.1.1'),
    'whisper.cpp': ('ggml-org/whisper.cpp', '51c6961c7b64b406833f4b6a4a20e67142f69225', 'tag v1.7.5'),
    'py-webrtcvad': ('wiseman/py-webrtcvad', 'bb429dac1a686807c69b916f03dd843fa10b0927', 'tag 2.0.10'),
    'pyroomacoustics': ('LCAV/pyroomacoustics', 'f02b01dd6609709e2089aefa5d1e59c91d3a0601', 'tag v0.10.1'),
    'pyannote-audio': ('pyannote/pyannote-audio', 'b749285c5cdd4636b2edc7f766f1352c8dde9369', 'tag 4.0.7'),
    # the capture was deleted before the pull request was squash-merged: its commit is reachable from refs/pull/53/head only
    'media-streams': ('twilio/media-streams', 'd54045a66ba2dd2f9b964e0f633e2889cdeaec3e', 'pull request #53, "Adds connect-basic example"'),
}

FILES = {  # a corpus file or folder: (repository, its path there); a folder maps each file inside by name
    'fsdd/metadata.txt': ('fsdd', 'metadata.py'),
    'fsdd/': ('fsdd', 'recordings/'),
    'librivox/': ('pocketsphinx', 'test/data/librivox/'),
    'misc/goforward.raw': ('pocketsphinx', 'test/data/goforward.raw'),
    'misc/jfk.wav': ('whisper.cpp', 'samples/jfk.wav'),
    'webrtc-vad/': ('py-webrtcvad', ''),  # pocketsphinx's test/data/vad/ holds the same two files
    'noise/doing_the_dishes.wav': ('pyroomacoustics', 'examples/input_samples/doing_the_dishes.wav'),
    'noise/exercise_bike.wav': ('pyroomacoustics', 'notebooks/exercise_bike.wav'),
    'ami/': ('pyannote-audio', 'tests/data/'),
    'twilio/media-stream-capture-2020.txt': ('media-streams', 'node/connect-basic/output.txt'),
}
LOCAL = {'MANIFEST.md': HERE / 'corpus' / 'MANIFEST.md'}  # kept in the repository: no upstream has it


def checksums() -> dict[str, str]:
    "The corpus's files and their SHA-256, from SHA256SUMS (`sha256sum` lines)."
    sums = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.lstrip('*')] = digest
    return sums


def url(name: str) -> str:
    "Where the corpus file `name` comes from: a raw URL at a pinned commit."
    key, path = FILES.get(name) or next(v for k, v in FILES.items() if k.endswith('/') and name.startswith(k))
    if path.endswith('/') or not path: path += name.rsplit('/', 1)[-1]
    repo, commit, _ = REPOS[key]
    return f'{BASE}/{repo}/{commit}/{path}'


def sha256(data: bytes) -> str: return hashlib.sha256(data).hexdigest()


def download(u: str, tries: int = 3) -> bytes:
    "The bytes at `u`, tried again after a network error."
    for i in range(tries):
        try:
            with urllib.request.urlopen(u, timeout=60) as r: return r.read()
        except OSError:
            if i == tries - 1: raise
            time.sleep(2 ** i)


def fetch(dest: Path) -> list[str]:
    "Lay the corpus out in `dest`; the files that could not be had right (none when it is whole)."
    sums, failed = checksums(), []
    for name, digest in sums.items():
        if name in LOCAL: continue
        target = dest / name
        if target.is_file() and sha256(target.read_bytes()) == digest: continue
        try: data = download(url(name))
        except OSError as e:
            failed.append(f'{name}: {url(name)}: {e}'); continue
        if (got := sha256(data)) != digest:
            failed.append(f'{name}: {url(name)}: SHA-256 {got}, not {digest}'); continue
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + '.part')
        part.write_bytes(data)
        part.replace(target)
    for name, src in LOCAL.items():
        if failed: break
        if sha256(src.read_bytes()) != sums[name]: failed.append(f'{name}: {src} differs from SHA256SUMS'); continue
        (dest / name).write_bytes(src.read_bytes())
    return failed


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('dest', nargs='?', type=Path, default=ROOT.parent / 'shared' / 'corpus', help='where the corpus goes (default: ../shared/corpus)')
    p.add_argument('--dry-run', action='store_true', help='print each URL and where its file goes; fetch nothing')
    a = p.parse_args()
    if a.dry_run:
        for name in checksums(): print(f'{LOCAL[name].relative_to(ROOT) if name in LOCAL else url(name)} -> {a.dest / name}')
        sys.exit(0)
    if failed := fetch(a.dest): sys.exit('corpus not fetched whole:\n' + '\n'.join(failed))
    print(f'{len(checksums())} files in {a.dest}, each as SHA256SUMS says')
