"""Sound-texture statistics (McDermott & Simoncelli 2011), as Owens et al. 2016 summarised a clip.

The mono signal goes through a bank of bandpass filters whose centres are evenly spaced on the
ERB-rate scale (second-order Butterworth sections, each one ERB-spaced step wide); each band's
Hilbert envelope is taken, downsampled to ``envelope_rate`` and compressed (``** 0.3``, as the
cochlea does). A clip is then summarised by, per band: the envelope's mean, its coefficient of
variation (spread relative to the mean), and the share of its variance in each octave-wide
modulation band (2-4, 4-8 ... Hz); and, between every two bands, the correlation of their
envelopes. :meth:`TextureStatistics.statistic_names` names every dimension of its output.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, signal

MODULATION_BANDS = ((2, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 128))
"""Modulation bands (Hz) whose envelope power is measured; each must lie below half the
envelope rate."""


def erb_rate(freq: np.ndarray | float) -> np.ndarray | float:
    """The ERB-rate (Glasberg & Moore 1990) of ``freq`` Hz."""
    return 21.4 * np.log10(1 + 0.00437 * np.asarray(freq))


def erb_rate_inverse(rate: np.ndarray | float) -> np.ndarray | float:
    """The frequency (Hz) of an ERB-rate."""
    return (10 ** (np.asarray(rate) / 21.4) - 1) / 0.00437


def band_edges(bands: int, low: float, high: float) -> np.ndarray:
    """``bands + 1`` edges (Hz) evenly spaced on the ERB-rate scale from ``low`` to ``high``."""
    return erb_rate_inverse(np.linspace(erb_rate(low), erb_rate(high), bands + 1))


class TextureStatistics:
    """A filterbank and the statistics of its envelopes, for one sample rate.

    ``bands`` ERB-spaced bands between ``low`` and ``high`` Hz (below the Nyquist frequency);
    envelopes resampled to ``envelope_rate`` Hz and raised to ``compression``.
    """

    def __init__(self, sample_rate: int, bands: int = 16, low: float = 80.0, high: float = 7000.0,
                 envelope_rate: int = 400, compression: float = 0.3):
        high = min(high, 0.45 * sample_rate)
        if low >= high:
            raise ValueError(f"filterbank from {low} Hz to {high} Hz is empty at {sample_rate} Hz")
        self.sample_rate = sample_rate
        self.edges = band_edges(bands, low, high)
        self.centres = np.sqrt(self.edges[:-1] * self.edges[1:])
        self.sos = [signal.butter(2, [lo, hi], btype="bandpass", fs=sample_rate, output="sos")
                    for lo, hi in zip(self.edges[:-1], self.edges[1:])]
        self.envelope_rate = envelope_rate
        self.compression = compression
        self.modulation_bands = [b for b in MODULATION_BANDS if b[1] <= envelope_rate / 2]

    @property
    def bands(self) -> int:
        """The number of filterbank bands."""
        return len(self.sos)

    def envelopes(self, audio: np.ndarray, chunk: int = 32) -> np.ndarray:
        """Compressed subband envelopes of mono ``audio`` [N, L]: [N, bands, L'].

        The filtering is done in the frequency domain: the spectrum of the signal is weighted
        by each filter's magnitude response with the negative frequencies removed, so one
        inverse FFT gives each band's analytic signal (its Hilbert envelope is the modulus).
        """
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        length = audio.shape[-1]
        size = fft.next_fast_len(length)
        freqs = fft.fftfreq(size, 1.0 / self.sample_rate)
        positive = np.where(freqs > 0, 2.0, np.where(freqs == 0, 1.0, 0.0))
        gains = np.stack([np.abs(signal.sosfreqz(sos, worN=np.abs(freqs), fs=self.sample_rate)[1])
                          for sos in self.sos]) * positive  # [bands, size]
        step = max(1, int(round(self.sample_rate / self.envelope_rate)))
        usable = length // step * step
        out = []
        for start in range(0, len(audio), chunk):
            spectrum = fft.fft(audio[start:start + chunk], n=size, axis=-1)
            analytic = fft.ifft(spectrum[:, None, :] * gains[None].astype(np.complex64), axis=-1)
            envelope = np.abs(analytic[..., :usable])
            # anti-aliased decimation: mean over each block of `step` samples
            out.append(envelope.reshape(*envelope.shape[:-1], -1, step).mean(-1))
        return np.concatenate(out) ** self.compression

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """The texture statistics of each clip of mono ``audio`` [N, L]: float32 [N, D]."""
        env = self.envelopes(audio)
        n, b, length = env.shape
        mean = env.mean(-1)
        centred = env - mean[..., None]
        std = np.sqrt((centred ** 2).mean(-1))
        cv = std / (mean + 1e-8)
        normed = centred / (std[..., None] + 1e-8)
        corr = np.einsum("nit,njt->nij", normed, normed) / length
        upper = np.triu_indices(b, k=1)
        power = np.abs(np.fft.rfft(centred * np.hanning(length), axis=-1)) ** 2
        freqs = np.fft.rfftfreq(length, 1.0 / self.envelope_rate)
        total = power[..., 1:].sum(-1) + 1e-12
        modulation = [power[..., (freqs >= lo) & (freqs < hi)].sum(-1) / total
                      for lo, hi in self.modulation_bands]
        return np.concatenate([np.log(mean + 1e-6), cv, corr[:, upper[0], upper[1]],
                               np.stack(modulation, -1).reshape(n, -1)], axis=1).astype(np.float32)

    def statistic_names(self) -> list[str]:
        """A name for every dimension of the statistics, in order."""
        names = [f"log-mean[{c:.0f}Hz]" for c in self.centres]
        names += [f"cv[{c:.0f}Hz]" for c in self.centres]
        names += [f"corr[{self.centres[i]:.0f}Hz,{self.centres[j]:.0f}Hz]"
                  for i, j in zip(*np.triu_indices(self.bands, k=1))]
        names += [f"mod[{c:.0f}Hz,{lo}-{hi}Hz]" for c in self.centres for lo, hi in self.modulation_bands]
        return names


def standardise(features: np.ndarray, mean: np.ndarray | None = None,
                std: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score each dimension (with the given, or the features' own, mean and spread);
    returns (standardised, mean, std). Constant dimensions are left at 0."""
    if mean is None:
        mean, std = features.mean(0), features.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    return ((features - mean) / std).astype(np.float32), mean, std

