"""Saving, loading and diffusers registration for weightless components (a ConfigMixin with no tensors:
:class:`~ldm_hub.LayoutTokenizer`, :class:`~ldm_hub.LayoutPlanner`)."""

from __future__ import annotations

import os


class ConfigComponent:
    """``save_pretrained`` / ``from_pretrained`` through the component's ``config_name`` file (mixed in before
    ConfigMixin). :func:`register_with_diffusers` lets a pipeline folder holding it save and load."""

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> None:
        """Write the config file (``config_name``) into ``save_directory``."""
        self.save_config(save_directory, push_to_hub=push_to_hub, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Read a component saved by :meth:`save_pretrained` (a folder, or a Hub repo with ``subfolder=``)."""
        config = cls.load_config(pretrained_model_name_or_path, **kwargs)
        return cls.from_config(config)


def register_with_diffusers(cls: type) -> type:
    """Let diffusers' ``DiffusionPipeline.save_pretrained`` (and its loader) find a config-only component's
    save/load methods; it only knows ModelMixin, SchedulerMixin and transformers' classes by default."""
    from diffusers.pipelines import pipeline_loading_utils

    methods = ["save_pretrained", "from_pretrained"]
    pipeline_loading_utils.LOADABLE_CLASSES.setdefault("ldm_hub", {})[cls.__name__] = methods
    pipeline_loading_utils.ALL_IMPORTABLE_CLASSES[cls.__name__] = methods
    return cls
