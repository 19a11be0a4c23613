"""Checks an entry point runs on its command line before Hydra starts, so that a bad input ends in one
line and exit 2 with nothing left behind: Hydra writes outputs/<date>/.hydra/*.yaml (the composed
config and the overrides, a password in a URI included) before the job function runs, and reports an
unknown key or a value of the wrong type as a multi-line message with exit 1.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import open_dict

from experiments.config.errors import ConfigError, one_line_errors
from experiments.config.launch_env import env_rank
from experiments.data import run_data
from experiments.tracking.store import check_uri
from experiments.config.plan import budget_overrides, check_uri_has_no_password, plan
from experiments.launch.grid import grid_overrides

CONF = Path(__file__).resolve().parents[2] / "conf"
_HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--package", "-p",
                "--run", "-r", "--shell-completion", "-sc", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun")


DEVICE_TYPES = ("cpu", "cuda")  # train.device: cpu, cuda or cuda:<index>
CUDA_FIX = ("install a CUDA build of torch (README, 'From laptop to cluster': make setup TORCH_SPEC=...), "
            "or set train.device=cpu")


def cuda_build() -> str | None:
    """The CUDA version this torch was built for; None for a CPU-only build."""
    import torch

    return torch.version.cuda


def check_device(device: str, *, needs_visible_gpu: bool, needs_cuda_build: bool = True) -> None:
    """train.device names a device this launch can train on, checked before anything runs or is submitted.

    Any cuda device needs a CUDA build of torch (torch.version.cuda). A GPU must also be visible when the
    jobs run on this machine (needs_visible_gpu: a single run, the local launchers); a SLURM submission
    from a login node without GPUs needs only the build; a dry run (needs_cuda_build=False) only plans.
    Raises ConfigError (one line, exit 2)."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in DEVICE_TYPES:
        raise ConfigError("train.device", device, "unknown device", "use train.device=cpu or train.device=cuda")
    if kind != "cuda" or not needs_cuda_build:
        return
    if cuda_build() is None:
        raise ConfigError("train.device", device, f"this torch ({torch.__version__}) is not a CUDA build", CUDA_FIX)
    if needs_visible_gpu and not torch.cuda.is_available():
        raise ConfigError("train.device", device, "no CUDA GPU is visible on this machine, where the jobs would run",
                          "run on a GPU machine (check nvidia-smi and CUDA_VISIBLE_DEVICES), submit through "
                          "launcher=slurm_gpu, or set train.device=cpu")


def runs_here(launcher_target: str | None) -> bool:
    """Whether a Hydra launcher runs the jobs on this machine (basic, submitit_local) rather than SLURM."""
    return not str(launcher_target or "").endswith("SlurmLauncher")


def preflight(config_name: str, argv: list[str], check_plan: bool = True) -> list[str]:
    """Compose every command-line grid point (unknown keys, wrong types) and, for a single run, validate
    it (`plan`); a password in any override value fails at once. Exits 2 with one line on the first
    error. Anything but overrides and -m/--multirun (Hydra's own flags) is left to Hydra. Returns argv
    with the budget a user names winning over the other's default (plan.budget_overrides): what the
    entry point hands to Hydra (`sys.argv[1:] = preflight(...)`)."""
    with one_line_errors():
        argv = budget_overrides(argv)
    if any(a.split("=", 1)[0] in _HYDRA_FLAGS for a in argv):
        return argv
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    with one_line_errors():
        parser = OverridesParser.create()
        for o in overrides:
            key, _, value = o.partition("=")
            check_uri_has_no_password(key.lstrip("+~"), value)
            try:
                parser.parse_override(o)
            except HydraException as err:  # Hydra's message names no key
                raise ConfigError(key.lstrip("+~"), value, f"cannot be parsed ({' '.join(str(err).split()[:8])} ...)",
                                  "see Hydra's override grammar; quote lists and dicts for the shell, e.g. "
                                  "'train.test_loops=[1,2]'") from None
        if GlobalHydra.instance().is_initialized():
            return argv  # inside another Hydra app (tests): compose would clash with it
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            points = grid_overrides(None, overrides)
            uris = set()
            for point in points:
                cfg = compose(config_name=config_name, overrides=point, return_hydra_config=True)
                dry_run = cfg.get("sweep", {}).get("dry_run", False)  # plans only: no store is touched
                if cfg.tracking.enabled and cfg.tracking.uri and cfg.tracking.uri not in uris and not dry_run:
                    uris.add(cfg.tracking.uri)
                    check_uri(cfg.tracking.uri)  # before a sweep's manifest or Hydra's dirs are written
                # hydra.mode composes to a RunMode enum (a sweep file's `mode: MULTIRUN` included)
                single = not multirun and cfg.hydra.mode != RunMode.MULTIRUN and len(points) == 1
                if check_plan and single:
                    with open_dict(cfg):
                        del cfg["hydra"]  # the job's view of its config
                    p = plan(cfg)
                    check_device(cfg.train.device, needs_visible_gpu=True)
                    ready_to_run(cfg, p)
    return argv


def ready_to_run(cfg, p) -> None:
    """What a valid single run needs beyond its config, checked before Hydra writes outputs/: a real corpus
    that parses and holds text (built into the cache the job then reads; on rank 0 only, the other ranks
    of a data-parallel launch wait for it in the job)."""
    if cfg.data.source != "stdlib" and env_rank() == 0:
        run_data.content_hash(cfg, Path(cfg.paths.root).resolve(), p.model.block_size)
