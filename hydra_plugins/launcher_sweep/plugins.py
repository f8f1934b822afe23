"""Hydra plugins for the launcher's sweeps, registered in Hydra's ConfigStore (selected by conf/config.yaml):

  hydra/sweeper: launcher_sweep   lists every point of `-m` (the cartesian product of the sweeps, as
                                  Hydra's basic sweeper does) without composing each one first, and hands
                                  them all to the launcher in one batch
  hydra/launcher: launcher_sweep  queues every point (launcher.sweep.run.run_sweep: the manifest, resume,
                                  signal deferral, the rate limit, the end table) and returns once they
                                  are queued, as hydra-submitit-launcher does

Hydra imports this module at every start (its plugin scan): it imports only Hydra's plugin interfaces;
the launcher's sweep code is imported when a sweep runs.
"""

# no `from __future__ import annotations`: Hydra's scan runs this module before it is in sys.modules,
# where dataclasses would look string annotations up
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper

NAME = "launcher_sweep"


@dataclass
class SweeperConf:
    _target_: str = "hydra_plugins.launcher_sweep.plugins.PointSweeper"
    # further sweeps from the config, as Hydra's basic sweeper's params: {key: "a,b"}
    params: Optional[Dict[str, str]] = None


@dataclass
class LauncherConf:
    _target_: str = "hydra_plugins.launcher_sweep.plugins.QueueLauncher"


ConfigStore.instance().store(group="hydra/sweeper", name=NAME, node=SweeperConf, provider="launcher")
ConfigStore.instance().store(group="hydra/launcher", name=NAME, node=LauncherConf, provider="launcher")


class PointSweeper(Sweeper):
    """Every point in one batch; composing is left to the launcher, which composes only what differs."""

    def __init__(self, params: Optional[Dict[str, str]] = None) -> None:
        self.params = dict(params or {})
        self.hydra_context: Any = None
        self.config: Any = None
        self.launcher: Optional[Launcher] = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from launcher.sweep.points import expand

        assert self.launcher is not None
        points = expand([f"{k}={v}" for k, v in self.params.items()] + list(arguments),
                        self.hydra_context.config_loader)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        return [self.launcher.launch(points, initial_job_idx=0)]


class QueueLauncher(Launcher):
    """Queues the batch's points (one heterogeneous job each) and returns; launcher.sweep does the work."""

    def __init__(self) -> None:
        self.hydra_context: Any = None
        self.task_function: Any = None
        self.config: Any = None
        self.sweep: Any = None  # the sweep the first batch opened (a sweeper may send several)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        from hydra.core.utils import configure_log

        from launcher.sweep.run import open_sweep, run_sweep

        if self.sweep is None:
            # the points run in this process: logging as the job's own (hydra.job_logging), as in a single launch
            configure_log(self.config.hydra.job_logging, self.config.hydra.verbose)
            self.sweep = open_sweep(self.config)
        return run_sweep(self.hydra_context, self.config, job_overrides, initial_job_idx, self.sweep)
