"""Test-time looping: the saturation law L(T) = L_inf + Z·exp(−z·T) per run (``saturation``) and the
alternative forms scored against it (``forms``, Parcae arXiv 2604.12946 Table 12)."""
