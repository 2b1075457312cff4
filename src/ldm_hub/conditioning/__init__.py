"""τ_θ and the y → tensor preparation: the condition encoders, and one Conditioner per conditioning mode.

Holds the encoders (:class:`LDMBertModel`, :class:`LayoutTokenizer`, :class:`LayoutPlanner`,
:class:`ClassEmbedder`, :class:`SemanticMapEncoder`), the shared input validators (:mod:`.inputs`), and the
per-mode conditioners (:mod:`.modes`, picked from the components by :func:`conditioner_for`).

Imports: models, data, and outside libraries only — never pipelines, convert, training, commands, demo, hub or
evaluation.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "LDMBertModel": ".text",
    "LayoutTokenizer": ".layout",
    "LayoutPlanner": ".layout_planner",
    "ClassEmbedder": ".class_label",
    "SemanticMapEncoder": ".semantic_map",
    "Condition": ".base",
    "Conditioner": ".base",
    "CONDITIONERS": ".modes",
    "conditioner_for": ".modes",
    "conditioner_class": ".modes",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
