"Smart Turn v3.2 (artist_hotline.smartturn): the pinned model file, its features, its verdicts on corpus audio, and its errors."
import importlib.util, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

import artist_hotline.smartturn as smartturn
from artist_hotline.endpointing import room_tone, sentence_cases
from artist_hotline.providers import ProviderError
from artist_hotline.smartturn import SMART_TURN_FILE, SMART_TURN_V32, SmartTurn, log_mel
from conftest import voiced


@pytest.fixture(scope='module')
def st() -> SmartTurn:
    return SmartTurn().load()


def test_the_pinned_file_is_found_without_importing_pipecat():
    code = ('import sys\nfrom artist_hotline.smartturn import SMART_TURN_V32, SMART_TURN_FILE\n'
            'print((SMART_TURN_V32.verify() / SMART_TURN_FILE).is_file(), any(m.split(".")[0] == "pipecat" for m in sys.modules))')
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split() == ['True', 'False']


def test_features_are_pipecats():
    "The same features as Pipecat's own numpy code, read from the pinned package as a file."
    spec = importlib.util.spec_from_file_location('pipecat_whisper_features', SMART_TURN_V32.path().parent / '_whisper_features.py')
    theirs = importlib.util.module_from_spec(spec); spec.loader.exec_module(theirs)
    x = np.r_[np.zeros(3 * 16000), voiced(10.0).astype(np.float32) / 32768].astype(np.float32)  # 8 s, read as 16 kHz
    np.testing.assert_allclose(log_mel(x), theirs.compute_whisper_log_mel_features(x), atol=1e-4)


def test_features_take_the_last_8_s_left_padded(st):
    x = voiced(10.0)
    np.testing.assert_array_equal(st.features(x), st.features(x[-8 * 8000:]))
    assert st.features(x[:4000]).shape == (1, 80, 800)
    assert st.features(np.zeros(0, np.int16)).shape == (1, 80, 800)


def test_same_probability_as_pipecats_steps(st):
    "Pipecat's analyzer's steps (_predict_endpoint: soxr HQ to 16 kHz, the last 8 s, its vendored features, the model), with its own feature code."
    import soxr
    spec = importlib.util.spec_from_file_location('pipecat_whisper_features', SMART_TURN_V32.path().parent / '_whisper_features.py')
    theirs = importlib.util.module_from_spec(spec); spec.loader.exec_module(theirs)
    for x in (voiced(1.5), voiced(9.0, seed=1)):
        y = soxr.resample(x[-8 * 8000:].astype(np.float32) / 32768, 8000, 16000, quality='HQ')  # its buffer holds the last 8 s at the line's rate
        y = np.pad(y, (128000 - len(y), 0))
        p = st._session.run(None, {'input_features': theirs.compute_whisper_log_mel_features(y, do_normalize=True)[None]})[0].item()
        assert st.probability(x) == pytest.approx(p, abs=1e-3)


def test_verdicts_from_threads_are_the_verdicts_of_one(st):
    pieces = [voiced(s, seed=s) for s in (1, 2, 3)]
    alone = [st.probability(x) for x in pieces]
    with ThreadPoolExecutor(3) as pool: assert list(pool.map(st.probability, pieces * 3)) == alone * 3


def test_wrong_sample_type_is_refused(st):
    with pytest.raises(TypeError, match='int16'): st.probability(np.zeros(8000, np.float32))
    with pytest.raises(TypeError, match='int16'): SmartTurn().features(np.zeros(8000, np.int32))


def test_a_changed_file_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / 'pipecat_copy' / SMART_TURN_V32.folder
    folder.mkdir(parents=True); (tmp_path / 'pipecat_copy' / '__init__.py').touch()
    data = bytearray((SMART_TURN_V32.verify() / SMART_TURN_FILE).read_bytes()); data[len(data) // 2] ^= 1
    (folder / SMART_TURN_FILE).write_bytes(bytes(data))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(smartturn, 'SMART_TURN_V32', replace(SMART_TURN_V32, module='pipecat_copy'))
    with pytest.raises(ProviderError, match='is not the file pinned for pipecat-ai 1.14.0'): SmartTurn().load()


def test_a_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(smartturn, 'SMART_TURN_V32', replace(SMART_TURN_V32, module='no_such_package_here'))
    with pytest.raises(ProviderError, match=r'pip install --no-deps pipecat-ai==1\.14\.0'): SmartTurn().load()


def test_a_bad_model_file_is_refused(tmp_path):
    with pytest.raises(ProviderError, match='no Smart Turn model'): SmartTurn(str(tmp_path / 'absent.onnx')).load()
    (tmp_path / 'junk.onnx').write_bytes(b'not a model')
    with pytest.raises(ProviderError, match='onnxruntime could not load'): SmartTurn(str(tmp_path / 'junk.onnx')).load()


def test_name_and_source():
    assert (SmartTurn().name, SmartTurn().source) == ('smart-turn/v3.2-cpu', 'pipecat-ai 1.14.0')
    assert (SmartTurn('/x/mine.onnx').name, SmartTurn('/x/mine.onnx').source) == ('smart-turn/mine', '/x/mine.onnx')


def test_verdicts_on_phone_audio(st, corpus):
    """Through the phone line: whole sentences above one half at their last sample and far above it when the server asks
    (after `ask_ms`, 200 ms, of the room's own silence); cuts after a function word far below it either way."""
    cases = {c.name: c for c in sentence_cases(corpus)}
    upto = lambda c, t, tail: np.r_[c.pcm[:int(round(t * 8000))], room_tone(c.pcm, tail)]
    for tail in (0.0, 0.2):
        for name in ('goforward', 'jfk'):  # at the bare end the score moves with the aligner's end by a frame (jfk: 0.67-0.83)
            assert st.probability(upto(cases[name], cases[name].end, tail)) > (0.9 if tail else 0.5)
        jfk, he = cases['jfk'], cases['0880']
        for c, i in ((jfk, 1), (jfk, 2), (he, 3)):  # "and so", "and so my", "he was not an"
            assert st.probability(upto(c, c.words[i][2], tail)) < 0.1
