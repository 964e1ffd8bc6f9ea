"""MBD's sampler and decoder: EnCodec tokens -> latent -> one diffusion per band -> summed, equalised.

The arithmetic follows AudioCraft's `MultiBandDiffusion.tokens_to_wav` step for step (its
conformance is checked against the package: test/conformance/test_mbd_conformance.py):

- each band's denoiser runs DDPM over a subsampled chain of its 1000-step power schedule
  (`step_list`: 20 steps by default, 999, 949, ..., 49, then 0), clipping at each step;
- its output goes back from the diffusion's space through the band's processor (a per-band rescale
  and shift, fitted in training) and the bands are summed;
- the sum is equalised to EnCodec's own decoding of the same tokens, band by band (32 mel bands:
  each rescaled to the standard deviation of EnCodec's).

All noise comes from one torch.Generator, drawn in the package's order (band by band: the initial
noise, then one draw per step but the last), so a seed gives the package's audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from server.engine.mbd.unet import DiffusionUNet

DEFAULT_STEPS = 20
EQ_BANDS = 32


@dataclass(frozen=True)
class Schedule:
    """The noise schedule (`NoiseSchedule` in AudioCraft) of one band."""

    beta_t0: float
    beta_t1: float
    beta_exp: float
    num_steps: int
    clip: float
    rescale: float
    noise_scale: float

    def betas(self) -> torch.Tensor:
        lo, hi = self.beta_t0 ** (1 / self.beta_exp), self.beta_t1 ** (1 / self.beta_exp)
        return torch.linspace(lo, hi, self.num_steps, dtype=torch.float32) ** self.beta_exp


def step_list(steps: int, num_steps: int = 1000) -> list[int]:
    """The chain's states for `steps` denoising steps: every (num_steps // steps)-th from the top,
    then 0. steps=20 gives AudioCraft's default list."""
    if not 1 <= steps < num_steps:
        raise ValueError(f"steps must be within 1..{num_steps - 1}")
    return list(range(num_steps))[:: -(num_steps // steps)][:steps] + [0]


class BandProcessor(torch.nn.Module):
    """Back from a band's diffusion space: split into `n_bands` mel bands, each rescaled by
    (std / target_std) ** power_std and shifted by its mean (AudioCraft's MultiBandProcessor, whose
    buffers are the checkpoint's processor_state). Identity when the band has none."""

    def __init__(self, sample_rate: int, n_bands: int, power_std: float | list[float]):
        import julius

        super().__init__()
        self.split_bands = julius.SplitBands(sample_rate, n_bands=n_bands)  # its filters are in the checkpoint too
        self.power_std = torch.tensor(power_std) if isinstance(power_std, list) else power_std
        for name, size in (("counts", 1), ("sum_x", n_bands), ("sum_x2", n_bands), ("sum_target_x2", n_bands)):
            self.register_buffer(name, torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.sum_x / self.counts
        std = (self.sum_x2 / self.counts - mean**2).clamp(min=0).sqrt()
        target_std = self.sum_target_x2 / self.counts  # AudioCraft's name for a mean square
        bands = self.split_bands(x)
        rescale = (std / target_std) ** self.power_std
        return (bands * rescale.view(-1, 1, 1, 1) + mean.view(-1, 1, 1, 1)).sum(dim=0)


@dataclass
class Band:
    unet: DiffusionUNet
    schedule: Schedule
    processor: BandProcessor | None

    def __post_init__(self):
        self._betas = self.schedule.betas()

    def _alpha_bar(self, step: int) -> torch.Tensor:
        return (1 - self._betas[: step + 1]).prod()

    @torch.inference_mode()
    def sample(self, condition: torch.Tensor, shape: tuple[int, ...], steps: list[int], gen: torch.Generator):
        """One band's audio [B, C, T]: DDPM over the subsampled chain `steps` (descending, ending at 0)."""
        s = self.schedule
        device = condition.device  # noise is drawn on the CPU: the same seed, the same audio anywhere
        x = torch.randn(shape, generator=gen).to(device) * s.noise_scale
        sub = (1 - self._betas).cumprod(dim=0)[list(reversed(steps))]
        sub_betas = 1 - torch.cat([sub[:1], sub[1:] / sub[:-1]])
        alpha_bar = self._alpha_bar(s.num_steps - 1)
        for i, step in enumerate(steps[:-1]):
            estimate = self.unet(x, step, condition) * s.noise_scale
            alpha = 1 - sub_betas[-1 - i]
            x = (x - (1 - alpha) / (1 - alpha_bar).sqrt() * estimate) / alpha.sqrt()
            if step == steps[-2]:  # the last step adds no noise
                alpha_bar = torch.tensor(1.0)
            else:
                previous = self._alpha_bar(steps[i + 1])
                sigma2 = (1 - previous) / (1 - alpha_bar) * (1 - alpha)
                if sigma2 > 0:
                    x = x + sigma2**0.5 * torch.randn(x.shape, generator=gen).to(device) * s.noise_scale
                alpha_bar = previous
            if s.clip:
                x = x.clamp(-s.clip, s.clip)
            if step == 0:
                x = x * s.rescale
        return x if self.processor is None else self.processor(x)


@dataclass
class MultiBand:
    """The bands of one MBD checkpoint, for one EnCodec (its sample rate and latent width)."""

    sample_rate: int
    bands: list[Band]

    @torch.inference_mode()
    def generate(self, latent: torch.Tensor, n_samples: int, steps: int, gen: torch.Generator) -> torch.Tensor:
        """The bands' sum [B, 1, n_samples] for EnCodec's latent [B, D, frames]."""
        chain = step_list(steps, self.bands[0].schedule.num_steps)
        shape = (latent.shape[0], 1, n_samples)
        out = torch.zeros(shape, device=latent.device)
        for band in self.bands:
            out += band.sample(latent, shape, chain, gen)
        return out

    @torch.inference_mode()
    def equalise(self, wav: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """`wav` with each of EQ_BANDS mel bands scaled to the standard deviation of `ref`'s (over
        the whole batch, as AudioCraft's re_eq does)."""
        import julius

        split = julius.SplitBands(n_bands=EQ_BANDS, sample_rate=self.sample_rate).to(wav.device)
        bands, ref_bands = split(wav), split(ref)
        out = torch.zeros_like(ref)
        for band, ref_band in zip(bands, ref_bands, strict=True):
            out += band * (ref_band.std() / band.std())
        return out

    def tokens_to_audio(
        self, latent: torch.Tensor, encodec_audio: torch.Tensor, steps: int, gen: torch.Generator
    ) -> torch.Tensor:
        """MBD's audio [B, 1, samples] for tokens whose EnCodec latent is `latent` [B, D, frames] and
        whose EnCodec decoding is `encodec_audio` [B, 1, samples]."""
        wav = self.generate(latent, encodec_audio.shape[-1], steps, gen)
        return self.equalise(wav, encodec_audio)
