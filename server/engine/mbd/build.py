"""The engine's MBD modules from a converted config (server/models/convert/mbd_checkpoint.py)."""

from __future__ import annotations

from typing import Any

import torch

from server.engine.mbd.diffusion import Band, BandProcessor, MultiBand, Schedule
from server.engine.mbd.unet import DiffusionUNet, UNetShape


class _BandModules(torch.nn.Module):
    def __init__(self, unet: DiffusionUNet, processor: BandProcessor | None):
        super().__init__()
        self.unet = unet
        if processor is not None:
            self.processor = processor


class Bands(torch.nn.Module):
    """Every band's U-Net and processor, under the converted copy's tensor names
    (bands.<i>.unet.<checkpoint key>, bands.<i>.processor.<buffer>)."""

    def __init__(self, config: dict[str, Any], meta: bool = False):
        """meta: the U-Nets without storage (for their names and shapes)."""
        super().__init__()
        rate = int(config["sample_rate"])
        modules = []
        for band in config["bands"]:
            shape = UNetShape(channels=band["channels"], num_steps=band["schedule"]["num_steps"], **band["unet"])
            proc = band["processor"]
            processor = None if proc is None else BandProcessor(rate, proc["n_bands"], proc["power_std"])
            with torch.device("meta" if meta else "cpu"):
                unet = DiffusionUNet(shape)
            modules.append(_BandModules(unet, processor))
        self.bands = torch.nn.ModuleList(modules)


def build_bands(config: dict[str, Any], meta: bool = False) -> Bands:
    return Bands(config, meta)


def multiband(config: dict[str, Any], modules: Bands) -> MultiBand:
    bands = [
        Band(m.unet.eval(), Schedule(**cfg["schedule"]), getattr(m, "processor", None))
        for m, cfg in zip(modules.bands, config["bands"], strict=True)
    ]
    return MultiBand(sample_rate=int(config["sample_rate"]), bands=bands)
