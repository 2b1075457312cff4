"""diffusers' custom-component hook for ldm_hub: model_index.json lists this component as ["ldm_hub", "ClassName"],
which diffusers resolves to this file. Nothing is defined here: the classes are the installed ldm_hub's."""

from ldm_hub import *  # noqa: F401,F403
