"""Our AnimateDiff pipelines: diffusers' own, with prompt travel that handles prompts over 77 tokens.

:class:`MotionAdaptersPipeline` (text to video) owns the models. Video-to-video and ControlNet calls run through
a *view* (:func:`pipeline_view`): diffusers' pipeline of that mode built around the very same model objects,
so switching modes never copies, rebuilds or re-reads a model, and each mode's frames are diffusers' own. An
IP-Adapter attached to the UNet works in every mode.
"""

from __future__ import annotations

import torch
from diffusers import (
    AnimateDiffControlNetPipeline,
    AnimateDiffPipeline,
    AnimateDiffSparseControlNetPipeline,
    AnimateDiffVideoToVideoControlNetPipeline,
    AnimateDiffVideoToVideoPipeline,
    ControlNetModel,
    SparseControlNetModel,
)

from motion_adapters.compat import check_free_noise_inputs
from motion_adapters.inference.prompts import encode_long, lerp_frames, num_chunks


class LongPromptTravel:
    """Prompt travel (FreeNoise prompt encoding) with chunked long-prompt embeddings, padded to the same length
    for every keyframe and for the negative prompt; mixed into each AnimateDiff pipeline class."""

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


class MotionAdaptersPipeline(LongPromptTravel, AnimateDiffPipeline):
    """Text to video: ``AnimateDiffPipeline`` with long-prompt prompt travel."""


class VideoToVideoPipeline(LongPromptTravel, AnimateDiffVideoToVideoPipeline):
    """Video to video: ``AnimateDiffVideoToVideoPipeline`` with long-prompt prompt travel."""


class ControlNetPipeline(LongPromptTravel, AnimateDiffControlNetPipeline):
    """Text to video following ControlNets: ``AnimateDiffControlNetPipeline`` with long-prompt prompt travel."""


class VideoToVideoControlNetPipeline(LongPromptTravel, AnimateDiffVideoToVideoControlNetPipeline):
    """Video to video following ControlNets: ``AnimateDiffVideoToVideoControlNetPipeline``, likewise."""


class SparseCtrlPipeline(LongPromptTravel, AnimateDiffSparseControlNetPipeline):
    """Keyframes conditioned by a SparseCtrl encoder: ``AnimateDiffSparseControlNetPipeline`` (no context windows
    or prompt travel: diffusers' SparseCtrl pipeline has no FreeNoise)."""


_VIEWS = {(True, False): VideoToVideoPipeline, (False, True): ControlNetPipeline,
          (True, True): VideoToVideoControlNetPipeline}


def pipeline_view(pipe: MotionAdaptersPipeline, *, video: bool, controlnets: list[ControlNetModel] | tuple[()] = (),
                  sparsectrl: SparseControlNetModel | None = None) -> AnimateDiffPipeline:
    """The pipeline for one call: ``pipe`` itself for text to video, else diffusers' pipeline of the mode
    (video to video, ControlNet, or both; SparseCtrl keyframes) around ``pipe``'s own models (its IP-Adapter
    image encoder included) and the given ControlNets or SparseCtrl encoder."""
    if not video and not controlnets and sparsectrl is None:
        return pipe
    cls = SparseCtrlPipeline if sparsectrl is not None else _VIEWS[(video, bool(controlnets))]
    modules = dict(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                   motion_adapter=pipe.motion_adapter, scheduler=pipe.scheduler,
                   feature_extractor=pipe.feature_extractor, image_encoder=pipe.image_encoder)
    if sparsectrl is not None:
        modules["controlnet"] = sparsectrl
    elif controlnets:
        modules["controlnet"] = controlnets[0] if len(controlnets) == 1 else list(controlnets)  # several: Multi…
    view = cls(**modules)
    view.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return view
