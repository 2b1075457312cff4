"""``push_to_hub`` for every ldm_hub component: ldm_hub's model card, ``revision=`` / ``create_pr=`` and real
dtype variants, instead of diffusers' generic one (whose card says ``library_name: diffusers``)."""

from __future__ import annotations


class HubMixin:
    """Mixed into ldm_hub's models, schedulers and tokenizers, before diffusers' mixins in the bases.

    Example:
        >>> from ldm_hub import DDIMScheduler
        >>> DDIMScheduler().push_to_hub("me/ddim", revision="dev")  # doctest: +SKIP
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
        """Save this component with its model card and upload it to ``repo_id`` in one commit."""
        from .hub import push_component

        return push_component(
            self, repo_id, commit_message=commit_message, commit_description=commit_description, private=private,
            token=token, revision=revision, create_pr=create_pr, variant=variant,
            safe_serialization=safe_serialization, license=license,
        )  # fmt: skip
