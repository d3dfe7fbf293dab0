"""CPU per provider request on the server's event loop: the SDK adapters (`cloud`) against the plain-HTTP ones (`wire`).

Run from the repository root: `.venv/bin/python bench/providers.py` (about a minute).

The fake cloud runs in its own process (`instant` profile: no waiting; a fixed transcript, the scripted
brain, a tone for speech) so that only the client's work is counted: `time.process_time()` of this process over N requests of each kind, on uvloop as
the server runs. A transcription uploads a 2 s turn; a chat reply streams 20-odd tokens; a speech
request streams one sentence of ElevenLabs `ulaw_8000`. Prints a table, writes
bench/results/providers.json.
"""
import asyncio, json, socket, subprocess, sys, time
from pathlib import Path

import numpy as np
import uvloop

from artist_hotline.cloud import ElevenLabsTTS, OpenAIChat, OpenAISTT
from artist_hotline.wire import HttpElevenLabsTTS, HttpOpenAIChat, HttpOpenAISTT

ROOT = Path(__file__).resolve().parent.parent
N = 200
MESSAGES = [{'role': 'system', 'content': 'You are Synthetic Jason, a painter. ' * 40}, {'role': 'user', 'content': 'tell me about your paintings'}]
SENTENCE = 'I paint with light, and the light paints back at me.'
PCM = (np.sin(np.arange(16000) / 5) * 3000).astype(np.int16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


async def cpu_ms(run, n: int = N) -> float:
    "CPU milliseconds of this process per call of `run`, after two warm-up calls."
    for _ in range(2): await run()
    t = time.process_time()
    for _ in range(n): await run()
    return 1000 * (time.process_time() - t) / n


async def measure(url: str) -> dict:
    out = {}
    for kind, stt, chat, tts in (('sdk', OpenAISTT, OpenAIChat, ElevenLabsTTS), ('http', HttpOpenAISTT, HttpOpenAIChat, HttpElevenLabsTTS)):
        a = dict(stt=stt(api_key='sk-bench', base_url=url + '/v1'), chat=chat(api_key='sk-bench', base_url=url + '/v1'),
                 tts=tts('bench-voice', api_key='xi-bench', base_url=url))
        async def transcribe(): assert await a['stt'].transcribe(PCM)
        async def reply(): assert [p async for p in a['chat'].reply(MESSAGES)]
        async def speak(): assert [c async for c in a['tts'].speak(SENTENCE)]
        out[kind] = {'transcription': await cpu_ms(transcribe), 'chat': await cpu_ms(reply), 'speech': await cpu_ms(speak)}
        for x in a.values(): await x.aclose()
    return out


def serve_cloud(port: int):
    "The fake cloud, with engines that cost next to nothing: a fixed transcript, the scripted brain, a tone for speech."
    from aiohttp import web
    from artist_hotline.fakecloud import Engines, create_fake_cloud
    from artist_hotline.offline import ScriptedBrain
    from artist_hotline.persona import load_persona
    from artist_hotline.providers import EchoSTT
    tone = lambda text: ((np.sin(np.arange(len(text) * 800) / 3) * 3000).astype(np.int16), 16000)  # about 50 ms per character
    engines = Engines(EchoSTT(['tell me about your paintings'] * 10 * N), ScriptedBrain(load_persona()), tone)
    web.run_app(create_fake_cloud('instant', engines=engines), host='127.0.0.1', port=port, print=None, access_log=None)


def main() -> int:
    port = free_port()
    url = f'http://127.0.0.1:{port}'
    cloud = subprocess.Popen([sys.executable, __file__, '--serve', str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):  # the fake cloud loads its engines first
            with socket.socket() as s:
                if s.connect_ex(('127.0.0.1', port)) == 0: break
            time.sleep(0.1)
        else: raise SystemExit('providers.py: the fake cloud did not start')
        res = uvloop.run(measure(url))
    finally:
        cloud.terminate(); cloud.wait(10)
    print(f'CPU per request on the client, ms (mean of {N}; fake cloud in another process)')
    print(f'{"request":<15}{"SDK":>8}{"HTTP":>8}{"SDK/HTTP":>10}')
    for k in ('transcription', 'chat', 'speech'):
        print(f'{k:<15}{res["sdk"][k]:>8.2f}{res["http"][k]:>8.2f}{res["sdk"][k] / res["http"][k]:>9.1f}x')
    turn = lambda r: r['transcription'] + r['chat'] + 2.2 * r['speech']  # 2.2 speech requests per turn in bench/capacity.py
    print(f'{"a turn":<15}{turn(res["sdk"]):>8.2f}{turn(res["http"]):>8.2f}{turn(res["sdk"]) / turn(res["http"]):>9.1f}x   '
          '(one transcription, one chat, 2.2 speech requests)')
    path = ROOT / 'bench' / 'results' / 'providers.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(n=N, cpu_ms=res), indent=1))
    print(f'wrote {path}')
    goal = turn(res['http']) * 2 <= turn(res['sdk'])
    print(f'goal: the plain-HTTP adapters cost at most half the SDKs\' CPU per turn: {"PASS" if goal else "FAIL"}')
    return 0 if goal else 1


if __name__ == '__main__':
    if sys.argv[1:2] == ['--serve']: serve_cloud(int(sys.argv[2]))
    else: sys.exit(main())
