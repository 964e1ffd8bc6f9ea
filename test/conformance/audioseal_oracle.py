"""The audioseal side of the AudioSeal conformance test. Runs in the oracle's venv with the audioseal
package on PYTHONPATH (setup-audioseal.sh), never in the project's: `python audioseal_oracle.py SNAPSHOT OUT`.

It loads the tiny checkpoints the project wrote (SNAPSHOT: generator_base.pth, detector_base.pth)
through audioseal's own loader, runs its generator and detector on fixed signals and saves what
they give in OUT/audioseal.npz. It also writes the same weights the way a training run's checkpoints
hold them (OUT/legacy/): weight norm as weight_g / weight_v (torch's weight_norm), the config as the
OmegaConf DictConfig of a Hydra run, with its references, for the converter to read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["NO_TORCH_COMPILE"] = "1"  # audioseal compiles its SEANet lazily; eager is the reference
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from audioseal import AudioSeal  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

SNAPSHOT, OUT = Path(sys.argv[1]), Path(sys.argv[2])
NBITS = 16


def signals() -> np.ndarray:
    """[batch, samples] at 16 kHz: a tone with noise, and noise alone, of a length that is not a
    whole number of the SEANet's 320-sample frames."""
    rng = np.random.default_rng(7)
    n = 16000 + 123
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(n)
    return np.stack([tone, 0.1 * rng.standard_normal(n)]).astype(np.float32)


def main() -> None:
    generator = AudioSeal.load_generator(str(SNAPSHOT / "generator_base.pth"), nbits=NBITS).eval()
    detector = AudioSeal.load_detector(str(SNAPSHOT / "detector_base.pth"), nbits=NBITS).eval()
    audio = signals()
    bits = np.array(
        [[(0xBEEF >> (15 - i)) & 1 for i in range(NBITS)], [(0x1234 >> (15 - i)) & 1 for i in range(NBITS)]]
    )
    x = torch.from_numpy(audio)[:, None, :]
    with torch.no_grad():
        mark = generator.get_watermark(x, message=torch.from_numpy(bits))
        marked = generator(x, message=torch.from_numpy(bits), alpha=1.0)
        result, message = detector(marked)
        score, decoded = detector.detect_watermark(marked)
        clean_score, _ = detector.detect_watermark(x)
    np.savez(
        OUT / "audioseal.npz",
        audio=audio,
        bits=bits,
        mark=mark[:, 0].numpy(),
        marked=marked[:, 0].numpy(),
        probability=result[:, 1].numpy(),
        message=message.numpy(),
        score=score.numpy(),
        decoded=decoded.numpy(),
        clean_score=clean_score.numpy(),
    )


def write_legacy() -> None:
    """The snapshot's checkpoints again, in the training run's form."""
    legacy = OUT / "legacy"
    legacy.mkdir()
    for name in ("generator_base.pth", "detector_base.pth"):
        pkg = torch.load(SNAPSHOT / name, map_location="cpu")
        state = {}
        for key, tensor in pkg["model"].items():
            if key.endswith((".conv.conv.weight", ".convtr.convtr.weight")):
                base = key[: -len(".weight")]
                state[base + ".weight_g"] = torch.norm_except_dim(tensor, 2, 0)
                state[base + ".weight_v"] = tensor
            else:
                state[key] = tensor
        seanet = dict(pkg["xp.cfg"]["seanet"], channels="${channels}", dimension="${audioseal.dimension}")
        training = OmegaConf.create(
            {"channels": 1, "sample_rate": 16000, "dtype": "float32", "seanet": seanet, "audioseal": {"dimension": 16}}
        )
        xp_cfg = {"seanet": training.seanet, "channels": training.channels, "dtype": "float32", "sample_rate": 16000}
        torch.save({"xp.cfg": xp_cfg, "model": state}, legacy / name)


if __name__ == "__main__":
    main()
    write_legacy()
