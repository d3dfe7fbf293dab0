"µ-law codec, framing, payloads and files."
import warnings
import numpy as np
import pytest
from artist_hotline.audio import *


@pytest.fixture(scope='module')
def audioop():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        return pytest.importorskip('audioop')


def test_encode_bit_exact_on_all_inputs(audioop):
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert ulaw_encode(every).tobytes() == audioop.lin2ulaw(every.tobytes(), 2)


def test_decode_bit_exact_on_all_codes(audioop):
    codes = np.arange(256, dtype=np.uint8)
    assert ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes.tobytes(), 2)
    assert ulaw_decode(codes.tobytes()).tobytes() == audioop.ulaw2lin(codes.tobytes(), 2)


def test_reference_check_values():
    assert ulaw_encode(np.array([0, -1, 32767, -32768], np.int16)).tolist() == [0xFF, 0x7E, 0x80, 0x00]
    assert ulaw_decode(bytes([0x00, 0x80, 0x7F, 0xFF])).tolist() == [-32124, 32124, 0, 0]


def test_package_does_not_import_audioop():
    import artist_hotline, pathlib
    for f in pathlib.Path(artist_hotline.__file__).parent.glob('*.py'):
        assert 'import audioop' not in f.read_text(), f


def test_payload_round_trip():
    x = (np.random.default_rng(0).normal(0, 3000, 160)).astype(np.int16)
    p = pcm_to_payload(x)
    assert len(payload_to_ulaw(p)) == FRAME_SAMPLES
    assert np.array_equal(payload_to_pcm(p), ulaw_decode(ulaw_encode(x)))
    with pytest.raises(ValueError): payload_to_ulaw('%%%')


def test_frames_pad_last():
    fs = list(frames(np.ones(161, np.int16)))
    assert [len(f) for f in fs] == [160, 160] and fs[1][1:].sum() == 0


@pytest.mark.parametrize('sr', [8000, 16000, 22050, 24000, 48000])
def test_resample_rates(sr):
    tone = (8000 * np.sin(2 * np.pi * 500 * np.arange(sr) / sr)).astype(np.int16)
    y = resample(tone, sr, 8000)
    assert y.dtype == np.int16 and len(y) == 8000
    back = resample(y, 8000, sr)
    assert abs(len(back) - sr) <= 1


def test_ulaw_wav_keeps_codes(tmp_path):
    x = np.random.default_rng(1).integers(-32768, 32767, 4000).astype(np.int16)
    write_wav(tmp_path / 'a.wav', x, ulaw=True)
    y, sr = read_audio(tmp_path / 'a.wav')
    assert sr == 8000 and np.array_equal(ulaw_encode(y), ulaw_encode(x))


def test_corpus_through_phone(corpus):
    x, sr = read_audio(corpus / 'ami/tst00.wav')  # float32 WAV
    assert sr == 16000 and x.dtype == np.int16
    p = to_phone(x, sr)
    assert abs(len(p) - len(x) // 2) <= 1
    raw, rsr = read_audio(corpus / 'misc/goforward.raw', 8000)
    assert rsr == 8000 and abs(len(raw) / 8000 - 2.79) < 0.05
