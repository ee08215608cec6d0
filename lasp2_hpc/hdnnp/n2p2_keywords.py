"""Keywords n2p2 recognises in input.nn (placeholder, replaced from n2p2's Settings.cpp)."""

KNOWN_KEYWORDS: frozenset[str] = frozenset(
    {
        "number_of_elements",
        "elements",
        "atom_energy",
        "cutoff_type",
        "symfunction_short",
        "scale_symmetry_functions",
        "scale_symmetry_functions_sigma",
        "center_symmetry_functions",
        "scale_min_short",
        "scale_max_short",
        "global_hidden_layers_short",
        "global_nodes_short",
        "global_activation_short",
        "normalize_nodes",
        "mean_energy",
        "conv_energy",
        "conv_length",
    }
)
KEYWORD_ALIASES: dict[str, str] = {"symfunction": "symfunction_short"}
REPEATABLE_KEYWORDS: frozenset[str] = frozenset({"symfunction_short", "atom_energy"})
