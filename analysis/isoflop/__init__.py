"""IsoFLOP analysis (Chinchilla Approach 2): per-budget profiles and their fits (``profiles``), quality
control (``qc``), the per-budget optima with their bootstrap (``optima``), power laws through the optima
(``powerlaw``) and both together on one allocation axis (``approach2``)."""
