"""τ_θ: condition encoders and the y → tensor preparation."""

from .._lazy import lazy_exports

_EXPORTS = {
    "LDMBertModel": ".text",
    "LayoutTokenizer": ".layout",
    "LayoutPlanner": ".layout_planner",
    "ClassEmbedder": ".class_label",
    "SemanticMapEncoder": ".semantic_map",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
