"""Parametric scaling laws (Chinchilla Approach 3): the forms (``forms``), the point fit (``point_fit``),
the run bootstrap (``bootstrap``), identifiability and outlier diagnostics (``diagnostics``), the
compute-optimal allocation each law implies (``allocation``), every law a set of runs supports fitted
(``results``), agreement with Approach 2 (``agreement``) and the interval coverage check (``coverage``)."""
