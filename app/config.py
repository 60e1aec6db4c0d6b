"""Settings of one studio server and the limits every request is checked against."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

LORA_SLOTS = 3            # LoRA dropdown + weight slider pairs on the Generate tab
CONTROLNET_SLOTS = 2      # ControlNet slots of the Generate tab's video input area
MAX_FRAMES = 256
MAX_SIZE = 1024           # pixels, each side
MAX_STEPS = 200
MAX_GUIDANCE = 30.0
MAX_MOTION_STRENGTH = 3.0
MAX_FREE_INIT = 5
MAX_LORA_WEIGHT = 2.0
MAX_CONTROL_SCALE = 2.0
DEFAULT_STRENGTH = 0.8    # video to video: how far from the uploaded clip (0 = the clip back, 1 = from noise)
MAX_IP_SCALE = 1.5        # the IP-Adapter's scale slider (how strongly the image prompt steers)
DEFAULT_IP_SCALE = 0.6
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**32 - 1
MAX_FPS = 60.0
MAX_TRAIN_STEPS = 100_000
MAX_TRAIN_CLIPS = 1000
MAX_RANK = 512
FORMATS = ("mp4", "gif", "webp", "webm")
PREVIEW_MIN_SIDE = 256    # small clips are shown upscaled (nearest neighbour); the download keeps the real size


@dataclass
class StudioConfig:
    """Where models are found and outputs go, the device, and the safety limits of the server."""

    models_dirs: list[Path] = field(default_factory=lambda: [Path("models")])
    output_dir: Path | None = None     # None: a new temporary folder
    device: str | None = None          # None: cuda when available
    dtype: str | None = None           # None: fp16 on CUDA, fp32 on CPU
    low_vram: bool = False
    queue_size: int = 16               # waiting requests; more are refused with "queue is full"
    max_upload_mb: float = 200.0
    keep_outputs: int = 200            # generations kept in the output folder (oldest removed)
    embedded: bool = True              # offer the embedded (registered) models

    def __post_init__(self) -> None:
        self.models_dirs = [Path(d).expanduser().resolve() for d in self.models_dirs]
        if self.output_dir is None:
            self.output_dir = Path(tempfile.mkdtemp(prefix="motion-adapters-studio-"))
        self.output_dir = Path(self.output_dir).expanduser().resolve()
        if self.queue_size < 1:
            raise ValueError(f"queue_size: expected at least 1, found {self.queue_size}")
        if self.max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb: expected a positive number, found {self.max_upload_mb}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
