"""Deprecated alias: ``python -m analysis.validate --csv FILE [flags]`` runs ``python -m analysis --csv
FILE [flags]`` (same column flags, report, summary.json), writing to reports/validate-<file stem>
unless --out is given. It prints no published reference values: only the person who brought the
table knows which publication, if any, it should reproduce."""
from __future__ import annotations

import sys
from pathlib import Path

from analysis.__main__ import main as analysis_main


# Flags of the old validate command that no longer exist, and where their job went.
REMOVED = {"--law": "the parametric laws the table supports are fitted and reported by "
                    "`python -m analysis --csv FILE`; published values are not printed (compare them yourself)"}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for flag, instead in REMOVED.items():
        if any(a == flag or a.startswith(flag + "=") for a in args):
            print(f"error: {flag} was removed from python -m analysis.validate: {instead}", file=sys.stderr)
            return 2
    if "-h" in args or "--help" in args:
        print(__doc__)
        return analysis_main(["--help"])
    if "--out" not in args and "--csv" in args and args.index("--csv") + 1 < len(args):
        args += ["--out", str(Path("reports") / f"validate-{Path(args[args.index('--csv') + 1]).stem}")]
    return analysis_main(args)


if __name__ == "__main__":
    sys.exit(main())
