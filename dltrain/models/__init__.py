"""Model builders: each config in conf/model/ names one of these classes as its _target_."""

# Kept free of torch so the config checks can name them before the heavy imports.
ACTIVATION_NAMES = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu")
