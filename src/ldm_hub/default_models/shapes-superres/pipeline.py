"""ldm_hub's LDMPipeline as a diffusers custom pipeline: Latent Diffusion Models (Rombach et al., CVPR 2022).

With plain diffusers and ldm_hub installed (`pip install ldm_hub`), a repo pushed by ldm_hub loads as
ldm_hub.LDMPipeline, never as diffusers' own unconditional LDMPipeline whose name it shares:

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("user/repo", trust_remote_code=True)
    pipe = DiffusionPipeline.from_pretrained("user/repo", custom_pipeline="user/repo", trust_remote_code=True)

The one pipeline class here is ldm_hub.LDMPipeline itself, re-exported rather than copied, so the sampling
code is the installed ldm_hub's and the images equal `ldm_hub.LDMPipeline.from_pretrained("user/repo")`'s.
"""

from ldm_hub import LDMPipeline

__all__ = ["LDMPipeline"]
