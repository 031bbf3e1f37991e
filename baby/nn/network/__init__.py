"""Feed-forward variants (``c_network``); ``baby.nn.variants`` lists the modules to load."""
