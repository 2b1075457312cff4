"""The demo's tables and caps: the tab of each conditioning mode (:data:`MODES`, from the conditioners), the
default tasks, and :class:`DemoSettings`. Imports ldm_hub.conditioning only."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..conditioning.modes import CONDITIONERS

# The tabs in the order the app shows them, by endpoint name; a tab's title and endpoint are its conditioner's.
TAB_ORDER = (
    "text_to_image", "layout_to_image", "class_to_image", "semantic_to_image", "inpaint", "super_resolution",
    "unconditional",
)  # fmt: skip
_CONDITIONERS = sorted(CONDITIONERS, key=lambda c: TAB_ORDER.index(c.api_name))
# mode → (tab title, endpoint name), in tab order.
MODES: dict[str, tuple[str, str]] = {c.mode: (c.tab_title, c.api_name) for c in _CONDITIONERS}
# The tasks whose shipped default model (``ldm_hub.default_model_path(task)``) the app loads without --model.
DEFAULT_TASKS = ("text", "layout", "superres")
DEFAULT_SCHEDULER = "model default"
LAYOUT_HEADERS = ["label", "x0", "y0", "x1", "y1"]


@dataclass(frozen=True)
class DemoSettings:
    """Defaults and caps of the demo, so that one visitor cannot take the machine.

    Example:
        >>> from ldm_hub.demo import DemoSettings
        >>> DemoSettings(max_steps=50, max_images=2).max_upload_bytes
        10485760
    """

    default_steps: int = 50
    max_steps: int = 200
    default_text_guidance: float = 3.0
    max_guidance: float = 20.0
    max_images: int = 4
    max_side: int = 1024  # generated images, pixels per side
    max_input_side: int = 512  # uploaded images (super-resolution input, semantic maps, inpainting), per side
    max_upload_mb: float = 10.0
    max_prompt_chars: int = 1000
    max_seed: int = 2**32 - 1
    concurrency_limit: int = 1  # sampling jobs at once, over all tabs
    max_queue_size: int = 32

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, int) and (not isinstance(value, int) or value < 1):
                raise ValueError(f"demo setting {f.name} must be a whole number >= 1, got {value!r}")
            if isinstance(f.default, float) and (not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"demo setting {f.name} must be a number > 0, got {value!r}")
        if self.default_steps > self.max_steps:
            raise ValueError(f"default_steps ({self.default_steps}) exceeds max_steps ({self.max_steps})")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
