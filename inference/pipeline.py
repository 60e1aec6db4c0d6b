"""Our AnimateDiff pipeline: diffusers' own, with prompt travel that handles prompts over 77 tokens."""

from __future__ import annotations

import torch
from diffusers import AnimateDiffPipeline

from motion_adapters.compat import check_free_noise_inputs
from motion_adapters.inference.prompts import encode_long, lerp_frames, num_chunks


class MotionAdaptersPipeline(AnimateDiffPipeline):
    """``AnimateDiffPipeline`` whose FreeNoise prompt encoding (prompt travel) uses chunked long-prompt
    embeddings, padded to the same length for every keyframe and for the negative prompt."""

    def _encode_prompt_free_noise(self, prompt, num_frames, device, num_videos_per_prompt,
                                  do_classifier_free_guidance, negative_prompt=None, prompt_embeds=None,
                                  negative_prompt_embeds=None, lora_scale=None, clip_skip=None):
        # Overrides a private diffusers method (no public hook exists for how prompt travel encodes its
        # keyframes); its parameters are compat.ENCODE_PROMPT_FREE_NOISE_PARAMS, checked against diffusers by test_compat.
        pos = prompt if isinstance(prompt, dict) else {0: prompt}
        neg = negative_prompt if isinstance(negative_prompt, dict) else {0: negative_prompt or ""}
        check_free_noise_inputs(self, pos, neg, num_frames)
        chunks = num_chunks(self.tokenizer, [*pos.values(), *neg.values()])
        pos_emb = self._keyframe_embeds(pos, num_frames, device, chunks)
        if not do_classifier_free_guidance:
            return pos_emb, None
        neg_emb = self._keyframe_embeds(neg, num_frames, device, chunks)
        return torch.cat([neg_emb, pos_emb]), neg_emb

    def _keyframe_embeds(self, prompts: dict[int, str], num_frames: int, device, chunks: int) -> torch.Tensor:
        frames = sorted(prompts)
        emb = encode_long(self, [prompts[f] for f in frames], device, min_chunks=chunks)
        return lerp_frames({f: emb[i : i + 1] for i, f in enumerate(frames)}, num_frames)
