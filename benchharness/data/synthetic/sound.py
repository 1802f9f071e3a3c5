"""Class-dependent sound textures for the synthetic world's clips.

Every class of :data:`benchharness.data.synthetic.world.CLASS_STYLES` names a ``sound`` (roar, bell,
chirp...). :data:`RECIPES` turns each name into a mix of a few textures, each with its own
centre frequencies and temporal structure:

- ``tone``: a harmonic stack (fundamental, number of harmonics, spectral roll-off), with
  vibrato, a glide over the clip, a sweep within each event and tremolo (amplitude modulation);
- ``noise``: a band of Gaussian noise (centre frequency, width in octaves), amplitude-modulated;
- ``strikes``: struck resonances (inharmonic partials decaying exponentially), at a regular or
  random (Poisson) rate: bells, clinks, thuds, clicks.

Any texture may be gated into events (``gate = (rate per second, duration in seconds)``). Every
clip jitters the frequencies and rates a little, draws its own phases and noise, and is mixed
with background noise (pink-ish, random tilt) at a random signal-to-noise ratio. Everything is
drawn from the ``numpy.random.Generator`` passed in, so a clip's audio is a pure function of it.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16_000
SNR_DB = (3.0, 15.0)
"""Range of the signal-to-background ratio a clip's sound is mixed at (dB, uniform)."""


def _tone(f0, harmonics=1, rolloff=0.6, vibrato=(0.0, 0.0), glide=1.0, sweep=0.0,
          am=(0.0, 0.0), gate=None, level=1.0):
    return dict(kind="tone", f0=f0, harmonics=harmonics, rolloff=rolloff, vibrato=vibrato,
                glide=glide, sweep=sweep, am=am, gate=gate, level=level)


def _noise(centre, octaves=1.0, am=(0.0, 0.0), gate=None, level=1.0, random_am=False):
    return dict(kind="noise", centre=centre, octaves=octaves, am=am, gate=gate, level=level,
                random_am=random_am)


def _strikes(freq, ratios=(1.0,), decay=0.1, rate=2.0, poisson=False, gate=None, level=1.0):
    return dict(kind="strikes", freq=freq, ratios=ratios, decay=decay, rate=rate, poisson=poisson,
                gate=gate, level=level)


RECIPES: dict[str, list[dict]] = {
    "roar": [_noise(350, 2.5, am=(1.5, 0.3)), _noise(1500, 1.0, am=(0.7, 0.4), level=0.4)],
    "bell": [_strikes(1800, (1.0, 2.76, 5.4), decay=0.25, rate=2.0)],
    "chirp": [_tone(3400, 2, 0.3, sweep=0.45, gate=(7.0, 0.07))],
    "horn": [_tone(180, 8, 0.75, gate=(0.8, 0.7))],
    "clink": [_strikes(4200, (1.0, 2.3), decay=0.04, rate=4.0, poisson=True)],
    "engine": [_tone(55, 24, 0.85, am=(12.0, 0.5)), _noise(300, 1.5, level=0.5)],
    "meow": [_tone(600, 6, 0.6, sweep=0.3, gate=(1.2, 0.45), vibrato=(6.0, 0.02))],
    "creak": [_strikes(900, (1.0, 1.7), decay=0.004, rate=60.0, gate=(1.0, 0.5))],
    "moo": [_tone(110, 10, 0.7, vibrato=(3.0, 0.03), gate=(0.7, 0.9))],
    "clatter": [_strikes(2500, (1.0, 1.41, 2.2), decay=0.012, rate=25.0, poisson=True)],
    "bark": [_noise(900, 1.5, gate=(3.0, 0.12)), _tone(400, 5, 0.6, gate=(3.0, 0.12), level=0.7)],
    "neigh": [_tone(450, 6, 0.6, vibrato=(12.0, 0.08), gate=(0.9, 0.6))],
    "rev": [_tone(80, 16, 0.8, glide=2.2, am=(30.0, 0.4))],
    "speech": [_tone(150, 12, 0.7, vibrato=(5.0, 0.05), am=(4.0, 0.9)),
               _noise(3200, 1.0, gate=(4.0, 0.06), level=0.4)],
    "rustle": [_noise(4500, 1.0, level=1.0, random_am=True)],
    "baa": [_tone(320, 8, 0.65, am=(22.0, 0.7), gate=(0.8, 0.7))],
    "thud": [_strikes(90, (1.0, 1.6), decay=0.08, rate=2.5)],
    "whistle": [_tone(2200, 2, 0.2, vibrato=(6.0, 0.01), am=(0.5, 0.3))],
    "static": [_noise(3000, 4.0), _strikes(5000, (1.0, 1.3), decay=0.002, rate=40.0, poisson=True,
                                           level=0.6)],
    "hum": [_tone(100, 4, 0.5)],
}
"""Sound name -> textures mixed for it (the classes' ``sound`` hints, plus a default ``hum``)."""


def _gate(t: np.ndarray, rate: float, duration: float, phase: float) -> np.ndarray:
    """Regular events (one every 1/rate s from ``phase``) of ``duration`` seconds, with 10 ms
    raised-cosine attacks and 20 ms releases."""
    position = np.mod(t - phase, 1.0 / rate)  # seconds since the current event began
    up = np.clip(position / 0.01, 0.0, 1.0)
    down = np.clip((duration - position) / 0.02, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(math.pi * np.minimum(up, down))) * (position < duration)


def _random_gate(rng: np.random.Generator, t: np.ndarray, rate: float, duration: float) -> np.ndarray:
    return _gate(t, rate, duration, rng.uniform(0.0, 1.0 / rate))


def _event_position(t: np.ndarray, rate: float, phase: float, duration: float) -> np.ndarray:
    """Where each sample lies within its event, 0..1 (events of ``duration`` every 1/rate s)."""
    return np.clip(np.mod(t - phase, 1.0 / rate) / duration, 0.0, 1.0)


def _modulation(rng, t, rate, depth) -> np.ndarray:
    if rate <= 0 or depth <= 0:
        return np.ones_like(t)
    return 1.0 - depth * 0.5 * (1.0 + np.sin(2 * math.pi * rate * t + rng.uniform(0, 2 * math.pi)))


def _band_noise(rng: np.random.Generator, n: int, sr: int, centre: float, octaves: float) -> np.ndarray:
    """Gaussian noise shaped in the frequency domain by a Gaussian on log-frequency."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    log_distance = np.log2(np.maximum(freqs, 1.0) / centre)
    spectrum *= np.exp(-0.5 * (log_distance / (octaves / 2.0)) ** 2)
    out = np.fft.irfft(spectrum, n)
    return out / (out.std() + 1e-12)


def _render(rng: np.random.Generator, part: dict, t: np.ndarray, sr: int, jitter: float) -> np.ndarray:
    n = len(t)
    wobble = lambda: math.exp(rng.normal(0.0, jitter))  # noqa: E731
    kind = part["kind"]
    if kind == "tone":
        f0 = part["f0"] * wobble()
        vib_rate, vib_depth = part["vibrato"]
        freq = f0 * part["glide"] ** (t / t[-1]) if n > 1 else np.full(n, f0)
        if vib_depth > 0:
            freq = freq * (1.0 + vib_depth * np.sin(2 * math.pi * vib_rate * wobble() * t
                                                    + rng.uniform(0, 2 * math.pi)))
        gate = part["gate"]
        rate, duration, phase = None, None, None
        if gate is not None:
            rate, duration = gate[0] * wobble(), gate[1]
            phase = rng.uniform(0.0, 1.0 / rate)
            if part["sweep"]:
                freq = freq * (1.0 + part["sweep"] * _event_position(t, rate, phase, duration))
        phase_acc = 2 * math.pi * np.cumsum(freq) / sr
        signal = np.zeros(n)
        for k in range(1, part["harmonics"] + 1):
            if k * freq.max() >= 0.45 * sr:
                break
            signal += part["rolloff"] ** (k - 1) * np.sin(k * phase_acc + rng.uniform(0, 2 * math.pi))
        signal *= _modulation(rng, t, part["am"][0] * wobble(), part["am"][1])
        if gate is not None:
            signal *= _gate(t, rate, duration, phase)
    elif kind == "noise":
        signal = _band_noise(rng, n, sr, part["centre"] * wobble(), part["octaves"])
        if part["random_am"]:  # irregular fast fluctuations (leaves)
            envelope = _band_noise(rng, n, sr, 20.0, 2.0)
            signal *= np.clip(0.6 + 0.5 * envelope, 0.0, None)
        signal *= _modulation(rng, t, part["am"][0] * wobble(), part["am"][1])
        if part["gate"] is not None:
            signal *= _random_gate(rng, t, part["gate"][0] * wobble(), part["gate"][1])
    elif kind == "strikes":
        rate = part["rate"] * wobble()
        duration_s = t[-1] + 1.0 / sr
        if part["poisson"]:
            count = rng.poisson(rate * duration_s)
            onsets = np.sort(rng.uniform(0.0, duration_s, size=count))
        else:
            onsets = np.arange(rng.uniform(0.0, 1.0 / rate), duration_s, 1.0 / rate)
        decay = part["decay"] * wobble()
        length = min(n, max(2, int(5 * decay * sr)))
        kt = np.arange(length) / sr
        freq = part["freq"] * wobble()
        kernel = sum(r ** -0.5 * np.sin(2 * math.pi * freq * r * kt + rng.uniform(0, 2 * math.pi))
                     for r in part["ratios"] if freq * r < 0.45 * sr) * np.exp(-kt / decay)
        signal = np.zeros(n + length)
        for onset in onsets:
            start = int(onset * sr)
            signal[start:start + length] += rng.uniform(0.5, 1.0) * kernel
        signal = signal[:n]
        if part["gate"] is not None:
            signal *= _random_gate(rng, t, part["gate"][0] * wobble(), part["gate"][1])
    else:  # pragma: no cover - the recipes above use only these kinds
        raise ValueError(f"unknown texture kind {kind!r}")
    rms = math.sqrt(float(np.mean(signal ** 2))) + 1e-12
    return part["level"] * signal / rms


def background_noise(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-RMS background noise with a random spectral tilt (between pink-ish and brown-ish)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 20.0)
    spectrum *= freqs ** (-rng.uniform(0.3, 0.8))
    out = np.fft.irfft(spectrum, n)
    return out / (out.std() + 1e-12)


def make_sound(rng: np.random.Generator, sound: str, seconds: float, sr: int = SAMPLE_RATE,
               jitter: float = 0.06) -> np.ndarray:
    """One clip's audio: the textures of ``sound`` mixed with background noise, float32 in
    [-1, 1] (peak 0.5); ``jitter`` is the log-normal spread of frequencies and rates."""
    if sound not in RECIPES:
        raise ValueError(f"unknown sound {sound!r}; known: {sorted(RECIPES)}")
    n = max(1, int(round(seconds * sr)))
    t = np.arange(n) / sr
    signal = sum(_render(rng, part, t, sr, jitter) for part in RECIPES[sound])
    signal = signal / (math.sqrt(float(np.mean(signal ** 2))) + 1e-12)
    snr = 10 ** (rng.uniform(*SNR_DB) / 20)
    mix = signal + background_noise(rng, n, sr) / snr
    return (0.5 * mix / (np.abs(mix).max() + 1e-12)).astype(np.float32)
