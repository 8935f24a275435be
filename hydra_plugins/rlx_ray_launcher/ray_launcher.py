"""``hydra/launcher=rlx_ray``: every job of a sweep as one Ray task, on the cluster ``ray.init()`` reaches.

    python -m rlx -m hydra/launcher=rlx_ray algo=grpo,dapo seed=0,1,2                  # a local Ray instance
    python -m rlx -m hydra/launcher=rlx_ray hydra.launcher.address=auto ...             # a running cluster
    python -m rlx --config-dir sweeps --config-name ray algo=grpo,dapo seed=0,1,2       # sweeps/ray.yaml

It takes the place of Hydra's own Ray launcher (hydra-ray-launcher), whose pins (cloudpickle 2.2.1, an old Ray)
cannot be installed beside rlx's other extras. Each job runs Hydra's ``run_job`` inside a Ray worker, as the
joblib launcher does in a loky worker: the job's config from the sweep overrides, its own sub-directory of
``hydra.sweep.dir``, and its ``JobReturn`` back to the driver (so rlx's sweep callback writes
``sweep_summary.json`` as with any launcher). A job that raises comes back as a failed ``JobReturn``; a worker
that dies raises on the driver. Keys: ``address`` (null: ``RAY_ADDRESS``, else a new local instance),
``num_cpus`` (CPUs of a local instance; null: all), ``cpus_per_job`` and ``gpus_per_job`` (each task's
resources: how many jobs run at once).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class RlxRayLauncherConf:
    _target_: str = "hydra_plugins.rlx_ray_launcher.ray_launcher.RlxRayLauncher"
    # Cluster to join: null = RAY_ADDRESS if set, else start a local Ray instance; "auto" = a running local cluster.
    address: Any = None
    # CPUs of a local Ray instance (null = all of this machine's).
    num_cpus: Any = None
    # Resources each job's task asks for: jobs run at once = CPUs / cpus_per_job (and GPUs / gpus_per_job).
    cpus_per_job: float = 1.0
    gpus_per_job: float = 0.0


ConfigStore.instance().store(group="hydra/launcher", name="rlx_ray", node=RlxRayLauncherConf, provider="rlx")


def _execute_job(idx: int, overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig,
                 task_function: TaskFunction, singleton_state: dict) -> JobReturn:
    """One sweep job in a Ray worker: its config from the overrides, numbered ``idx``, run by Hydra's ``run_job``."""
    from hydra.core.hydra_config import HydraConfig

    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class RlxRayLauncher(Launcher):
    def __init__(self, address=None, num_cpus=None, cpus_per_job: float = 1.0, gpus_per_job: float = 0.0):
        self.address, self.num_cpus = address, num_cpus
        self.cpus_per_job, self.gpus_per_job = float(cpus_per_job), float(gpus_per_job)
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            ray.init(address=self.address, num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=True)
        log.info(f"Ray ({ray.cluster_resources().get('CPU', 0):.0f} CPUs) is launching {len(job_overrides)} jobs, "
                 f"sweep output dir: {sweep_dir}")
        for i, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + i} : {' '.join(filter_overrides(overrides))}")
        task = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job, max_retries=0)(_execute_job)
        state = Singleton.get_state()
        refs = [task.remote(initial_job_idx + i, list(o), self.hydra_context, self.config, self.task_function, state)
                for i, o in enumerate(job_overrides)]
        return ray.get(refs)
