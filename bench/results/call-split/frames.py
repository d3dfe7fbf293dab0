"Per-frame cost of Call.feed on the old and the new code: the same speech-like signal, fake engines, no event loop work in between."
import asyncio, time, sys, numpy as np
from artist_hotline.call import Call
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT, CannedLLM, ToneTTS, Providers
from artist_hotline.twilio import Start, Media
from artist_hotline.audio import frames, ulaw_encode
def speechlike(seconds, seed=0):
    rng = np.random.default_rng(seed); n = int(seconds * 8000); t = np.arange(n) / 8000
    phase = 2 * np.pi * np.cumsum(130 + 20 * np.sin(2 * np.pi * 0.7 * t + seed)) / 8000
    x = sum(np.sin(k * phase + rng.uniform(0, 6.28)) / k for k in range(1, 20))
    return (4000 * x * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.int16)
async def main():
    sig = np.concatenate([np.r_[speechlike(2.0, i), np.zeros(8000 * 3, np.int16)] for i in range(6)])
    msgs = [Media('MZ1', ulaw_encode(f).tobytes()) for f in frames(sig)]
    async def send(x): pass
    best = []
    for rep in range(5):
        call = Call(Start('MZ1', 'CA1'), Providers(EchoSTT(['x'] * 100), CannedLLM(), ToneTTS()), load_persona(), send)
        t = time.process_time()
        for m in msgs: call.feed(m)
        best.append((time.process_time() - t) / len(msgs) * 1e6)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task(): task.cancel()
        await asyncio.sleep(0)
    print(f'{sys.argv[1]}: per frame {min(best):.1f} us (min of 5), median {np.median(best):.1f} us, {len(msgs)} frames')
asyncio.run(main())
