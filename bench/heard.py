"""What the server heard, against what was said: the word error rate of each turns bench result, from its recorded turns.

Run from the repository root, on results of `bench/turns.py` (those written before the bench recorded what each case
says get it from the corpus, by case name):

    .venv/bin/python bench/heard.py bench/results/turns-cloud-3b4702a.json bench/results/turns-cloud.json

Prints one row per file (sentences, paused or not; phone numbers; digits) and writes bench/results/heard.json.
"""
from __future__ import annotations

import argparse, json, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blackbox import ROOT, corpus_ok  # noqa: E402 (sibling modules)
from turns import cases, heard_by_group, said  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('files', nargs='+', help='turns bench results (JSON)')
    ap.add_argument('--corpus', default=str(ROOT.parent / 'shared' / 'corpus'), help='the real corpus (default ../shared/corpus)')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'heard.json'))
    a = ap.parse_args(argv)
    if not corpus_ok(Path(a.corpus), 'heard.py'): return 2
    says = {(c.name, c.group): said(c) for c in cases(Path(a.corpus), False, 1.)}
    out = {}
    for f in a.files:
        d = json.loads(Path(f).read_text())
        rows = [dict(r, said=r.get('said', says.get((r['case'], r['group']), ''))) for r in d['cases']]
        r = out[Path(f).name] = dict(mode=d['mode'], commit=d['code']['commit'][:7], date=d['date'], **heard_by_group(rows))
        print(f'{Path(f).name:32s} {r["mode"]:8s} {r["commit"]}  sentences {r["complete"]["wer"]:.3f} ({r["complete"]["words"]} words)'
              f'  numbers {r["numbers"]["wer"]:.3f}  digits {r["digits"]["wer"]:.3f}')
    Path(a.out).write_text(json.dumps(out, indent=1) + '\n')
    print(f'wrote {a.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
