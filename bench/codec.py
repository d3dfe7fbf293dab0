"""Time µ-law encode and decode of 10 minutes of 8 kHz audio against CPython's `audioop`.

Run: `.venv/bin/python bench/codec.py`. Prints both figures and the ratio, writes bench/results/codec.json.
"""
import json, timeit, warnings
from pathlib import Path
import numpy as np
from artist_hotline.audio import ulaw_encode, ulaw_decode

with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    try: import audioop
    except ImportError: audioop = None

SECONDS = 600
rng = np.random.default_rng(0)
pcm = np.clip(rng.normal(0, 4000, SECONDS * 8000), -32768, 32767).astype(np.int16)
codes = ulaw_encode(pcm)
pcm_b, codes_b = pcm.tobytes(), codes.tobytes()


def best(fn, n=20):
    "Best of n runs, in milliseconds."
    return min(timeit.repeat(fn, number=1, repeat=n)) * 1000


ours = {'encode': best(lambda: ulaw_encode(np.frombuffer(pcm_b, np.int16))),
        'decode': best(lambda: ulaw_decode(codes_b))}
ref = {'encode': best(lambda: audioop.lin2ulaw(pcm_b, 2)), 'decode': best(lambda: audioop.ulaw2lin(codes_b, 2))} if audioop else {}
print(f'µ-law codec on {SECONDS // 60} min of 8 kHz audio ({len(pcm):,} samples), best of 20 (bytes in; ours returns numpy arrays, audioop bytes)')
result = {'samples': len(pcm)}
for op in ('encode', 'decode'):
    line = f'  {op}: artist_hotline {ours[op]:7.2f} ms'
    result[op] = {'artist_hotline_ms': ours[op]}
    if ref:
        line += f'   audioop {ref[op]:7.2f} ms   audioop/ours = {ref[op] / ours[op]:.2f}x'
        result[op].update(audioop_ms=ref[op], speedup=ref[op] / ours[op])
    print(line)
if not ref: print('  audioop is not importable on this Python: no reference figures')
out = Path(__file__).parent / 'results'; out.mkdir(exist_ok=True)
(out / 'codec.json').write_text(json.dumps(result, indent=1))
