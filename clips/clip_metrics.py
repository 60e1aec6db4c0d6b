"""CLIP text–video score and CLIP frame consistency, from local CLIP weights only (never a download).

``--clip-model DIR`` is a transformers ``CLIPModel`` folder (``config.json`` + weights) with its tokenizer files
(``vocab.json``/``merges.txt`` or ``tokenizer.json``); ``preprocessor_config.json`` is read for the normalisation
if present. Frames are resized (bicubic) so the short side is the model's image size, centre-cropped and
normalised — the CLIP preprocessing, done here without torchvision.

* ``clip_score`` (CLIPSIM, torchmetrics' convention): mean over frames of ``max(100·cos(E_img, E_txt), 0)``.
* ``clip_frame_consistency``: mean ``cos(E_img(f), E_img(f+1))`` over consecutive frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from motion_adapters.errors import MotionAdapterError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_FRAMES = 64


class LocalCLIP:
    """A CLIP model and tokenizer loaded from a local folder."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        import torch
        from transformers import AutoTokenizer, CLIPModel

        p = Path(path)
        if not (p / "config.json").is_file():
            raise MotionAdapterError(f"--clip-model {p}: expected a local CLIPModel folder (config.json + weights), "
                                     f"found {'no config.json' if p.is_dir() else 'no folder'}")
        try:
            self.model = CLIPModel.from_pretrained(p, local_files_only=True).to(device).eval()
        except (OSError, ValueError) as e:
            raise MotionAdapterError(f"--clip-model {p}: expected CLIPModel weights, found an unloadable folder "
                                     f"({str(e).splitlines()[0][:200]})") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise MotionAdapterError(f"--clip-model {p}: expected tokenizer files (vocab.json + merges.txt or "
                                     f"tokenizer.json), found none usable ({str(e).splitlines()[0][:120]})") from None
        self.device, self.torch = device, torch
        self.size = int(self.model.config.vision_config.image_size)
        mean, std = OPENAI_MEAN, OPENAI_STD
        pre = p / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, np.float32).reshape(1, 1, 3)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def _pixels(self, frames: np.ndarray):
        out = []
        for f in frames:
            im = Image.fromarray(f)
            s = self.size / min(im.size)
            im = im.resize((max(self.size, round(im.width * s)), max(self.size, round(im.height * s))),
                           Image.BICUBIC)
            left, top = (im.width - self.size) // 2, (im.height - self.size) // 2
            a = np.asarray(im.crop((left, top, left + self.size, top + self.size)), np.float32) / 255.0
            out.append(((a - self.mean) / self.std).transpose(2, 0, 1))
        return self.torch.from_numpy(np.stack(out)).to(self.device)

    @staticmethod
    def _features(out):
        return out if hasattr(out, "norm") else out.pooler_output  # transformers 5 returns a model output

    def image_embeds(self, frames: np.ndarray):
        with self.torch.no_grad():
            e = self._features(self.model.get_image_features(pixel_values=self._pixels(frames)))
        return e / e.norm(dim=-1, keepdim=True)

    def text_embeds(self, texts: list[str]):
        tok = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        with self.torch.no_grad():
            e = self._features(self.model.get_text_features(input_ids=tok["input_ids"],
                                                            attention_mask=tok["attention_mask"]))
        return e / e.norm(dim=-1, keepdim=True)

    def scores(self, frames: np.ndarray, prompts: list[str] | None = None) -> dict[str, float]:
        """CLIP frame consistency, plus the CLIP score when ``prompts`` (one per frame, or one) is given."""
        f = np.asarray(frames)
        if len(f) > MAX_FRAMES:
            keep = np.linspace(0, len(f) - 1, MAX_FRAMES).round().astype(int)
            f = f[keep]
            prompts = [prompts[i] for i in keep] if prompts and len(prompts) > 1 else prompts
        img = self.image_embeds(f)
        out: dict[str, float] = {}
        if len(f) > 1:
            out["clip_frame_consistency"] = float((img[:-1] * img[1:]).sum(-1).mean())
        if prompts:
            uniq = sorted(set(prompts))
            txt = self.text_embeds(uniq)
            rows = txt[[uniq.index(p) for p in (prompts if len(prompts) == len(f) else prompts[:1] * len(f))]]
            out["clip_score"] = float((100 * (img * rows).sum(-1)).clamp(min=0).mean())
        return out
