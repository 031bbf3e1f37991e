"""Every sequence mixer (``c_attention``): attention variants, conv, induction, over one kit of shared
pieces (kit.py) and two base modules (head_attention.py, prefix_mixer.py). ``baby.nn.variants`` lists
the variant modules to load."""
