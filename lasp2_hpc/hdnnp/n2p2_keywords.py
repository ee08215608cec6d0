"""Keywords that n2p2 recognises in ``input.nn``.

Taken from n2p2's ``src/libnnp/Settings.cpp`` (``createKnownKeywordsMap``, commit 61daa0df); a
keyword outside this list is rejected, as n2p2 itself does.
"""

KNOWN_KEYWORDS: frozenset[str] = frozenset(
    {
        "number_of_elements",
        "elements",
        "atom_energy",
        "cutoff_type",
        "symfunction_short",
        "scale_symmetry_functions",
        "scale_min_short",
        "scale_max_short",
        "center_symmetry_functions",
        "scale_symmetry_functions_sigma",
        "global_hidden_layers_short",
        "global_hidden_layers_electrostatic",
        "global_nodes_short",
        "global_nodes_electrostatic",
        "global_activation_short",
        "global_activation_electrostatic",
        "element_hidden_layers_short",
        "element_hidden_layers_electrostatic",
        "element_nodes_short",
        "element_nodes_electrostatic",
        "element_activation_short",
        "element_activation_electrostatic",
        "normalize_nodes",
        "mean_energy",
        "conv_length",
        "conv_energy",
        "conv_charge",
        "nnp_type",
        "fixed_gausswidth",
        "ewald_truncation_error_method",
        "ewald_prec",
        "screen_electrostatics",
        "four_pi_epsilon",
        "random_seed",
        "test_fraction",
        "epochs",
        "normalize_data_set",
        "use_short_forces",
        "rmse_threshold",
        "rmse_threshold_energy",
        "rmse_threshold_force",
        "rmse_threshold_charge",
        "rmse_threshold_trials",
        "rmse_threshold_trials_energy",
        "rmse_threshold_trials_force",
        "rmse_threshold_trials_charge",
        "energy_fraction",
        "force_fraction",
        "force_energy_ratio",
        "charge_fraction",
        "use_old_weights_short",
        "use_old_weights_charge",
        "weights_min",
        "weights_max",
        "initial_hardness",
        "nguyen_widrow_weights_short",
        "nguyen_widrow_weights_charge",
        "precondition_weights",
        "main_error_metric",
        "write_trainpoints",
        "write_trainforces",
        "write_traincharges",
        "write_weights_epoch",
        "write_neuronstats",
        "write_trainlog",
        "repeated_energy_update",
        "updater_type",
        "parallel_mode",
        "jacobian_mode",
        "update_strategy",
        "selection_mode",
        "selection_mode_energy",
        "selection_mode_force",
        "selection_mode_charge",
        "task_batch_size_energy",
        "task_batch_size_force",
        "task_batch_size_charge",
        "gradient_type",
        "gradient_eta",
        "gradient_adam_eta",
        "gradient_adam_beta1",
        "gradient_adam_beta2",
        "gradient_adam_epsilon",
        "kalman_type",
        "kalman_epsilon",
        "kalman_eta",
        "kalman_etatau",
        "kalman_etamax",
        "kalman_q0",
        "kalman_qtau",
        "kalman_qmin",
        "kalman_lambda_short",
        "kalman_nue_short",
        "memorize_symfunc_results",
        "force_weight",
    }
)

# Alternative spellings n2p2 accepts, mapped to the main keyword.
KEYWORD_ALIASES: dict[str, str] = {
    "nnp_generation": "nnp_type",
    "nnp_type_gen": "nnp_type",
    "nnp_gen": "nnp_type",
    "short_energy_error_threshold": "rmse_threshold_energy",
    "short_force_error_threshold": "rmse_threshold_force",
    "short_energy_fraction": "energy_fraction",
    "short_force_fraction": "force_fraction",
    "symfunction": "symfunction_short",
}

# Keywords n2p2 allows more than once.
REPEATABLE_KEYWORDS: frozenset[str] = frozenset(
    {
        "symfunction_short",
        "atom_energy",
        "element_nodes_short",
        "fixed_gausswidth",
        "initial_hardness",
    }
)

# Keywords that change the potential in ways this engine does not implement (per-element network
# shapes, the charge-equilibration network of 4G-HDNNPs): a model using them is refused rather
# than evaluated wrongly.
UNSUPPORTED_KEYWORDS: frozenset[str] = frozenset(
    {
        "element_hidden_layers_short",
        "element_nodes_short",
        "element_activation_short",
        "global_hidden_layers_electrostatic",
        "global_nodes_electrostatic",
        "global_activation_electrostatic",
        "element_hidden_layers_electrostatic",
        "element_nodes_electrostatic",
        "element_activation_electrostatic",
        "fixed_gausswidth",
        "ewald_truncation_error_method",
        "ewald_prec",
        "screen_electrostatics",
        "four_pi_epsilon",
        "conv_charge",
        "initial_hardness",
    }
)


def unsupported_reason(keyword: str) -> str:
    """What an unsupported keyword asks for, in words, for error messages."""
    if keyword.startswith("element_") and keyword.endswith("_short"):
        return "network shapes or activations that differ between elements"
    if keyword == "nnp_type":
        return "a potential other than a short-range 2G-HDNNP (4G-HDNNP: charge equilibration)"
    return "4G-HDNNP charge equilibration and electrostatics (charges, Ewald sums, screening)"


# Keywords that define the potential (not its training): lasp2 writes them from its HDNNP
# settings, so a trainer's extra keywords must not repeat them.
POTENTIAL_KEYWORDS = frozenset(
    {
        "number_of_elements",
        "elements",
        "atom_energy",
        "cutoff_type",
        "symfunction_short",
        "symfunction",
        "scale_symmetry_functions",
        "scale_min_short",
        "scale_max_short",
        "center_symmetry_functions",
        "scale_symmetry_functions_sigma",
        "global_hidden_layers_short",
        "global_nodes_short",
        "global_activation_short",
        "normalize_nodes",
        "mean_energy",
        "conv_length",
        "conv_energy",
    }
)
