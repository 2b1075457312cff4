"""``push_to_hub`` for LDMPipeline and every ldm_hub component: ldm_hub's model card, ``revision=`` /
``create_pr=`` and real dtype variants, instead of diffusers' generic one (whose card says
``library_name: diffusers``)."""

from __future__ import annotations


class HubMixin:
    """Mixed into LDMPipeline and ldm_hub's models, schedulers and tokenizers, before diffusers' mixins.

    Example:
        >>> from ldm_hub import DDIMScheduler
        >>> DDIMScheduler().push_to_hub("me/ddim", revision="dev")  # doctest: +SKIP
        >>> pipe.push_to_hub("me/tiny-text2im", commit_message="20k steps")  # doctest: +SKIP
    """

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        *,
        revision: str | None = None,
        commit_description: str | None = None,
        license: str = "apache-2.0",
    ):
        """Save this pipeline or component with its model card and upload it to ``repo_id`` in one commit.

        Creates ``repo_id`` if needed (``private``); ``revision`` commits to a branch (created from main if
        missing) or ``refs/pr/N``; ``create_pr=True`` opens a pull request; ``variant="fp16"`` uploads fp16
        weights as ``*.fp16.safetensors``. Files the repo already has unchanged are not uploaded again.
        Returns huggingface_hub's ``CommitInfo`` (``.oid``: the commit sha).
        """
        from diffusers import DiffusionPipeline

        from .hub import push_component, push_pipeline

        push = push_pipeline if isinstance(self, DiffusionPipeline) else push_component
        return push(
            self, repo_id, commit_message=commit_message, commit_description=commit_description, private=private,
            token=token, revision=revision, create_pr=create_pr, variant=variant,
            safe_serialization=safe_serialization, license=license,
        )  # fmt: skip
