"""Multi-Band Diffusion (MBD): EnCodec tokens to audio by diffusion, one model per frequency band.

- unet.py: the per-band denoiser (a 1-D convolutional U-Net conditioned on EnCodec's latent);
- diffusion.py: the noise schedule, the sampler, the band processor and the decoder of a timeline
  (tokens -> EnCodec latent -> one diffusion per band, summed -> equalised to EnCodec's own output).

The published checkpoint (facebook/multiband-diffusion) is read and converted by
server/models/mbd.py; these modules only compute.
"""
