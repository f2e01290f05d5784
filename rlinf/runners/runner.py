"""The one training loop. A workflow (made by the factory the caller passes: rlinf.workflows) supplies the
phases; the schedule their order.

    batch   = schedule.next_batch(workflow, step)   # sync: sync weights, then collect now
    metrics = workflow.train(batch)
    schedule.after_update(workflow, step)
    log / evaluate / progress

The loop owns what every run shares: the cluster, the run directory (config, metrics, summary,
timeline, TensorBoard), evaluation at start and end, throughput and the progress bar.
"""

import copy
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import ray

from rlinf.config import RLinfConfig, to_yaml
from rlinf.errors import InputError, RunFailure
from rlinf.placement import Placement
from rlinf.runners import checkpoints
from rlinf.runners.progress import Progress
from rlinf.runners.schedules import make_schedule
from rlinf.scheduler import Cluster, NodeLostError
from rlinf.utils.rundir import RunDir

logger = logging.getLogger(__name__)

# What the restart path handles: the runtime's failure family and Ray's own (an actor that died, an
# object that was lost). Bad input and bugs in the controller are not retried.
RESTARTABLE = (RunFailure, ray.exceptions.RayError)


# make_workflow(cfg, placement, phase) -> a workflow: start(cluster), collect / train / evaluate, checkpoints.
WorkflowFactory = Callable[[RLinfConfig, Placement, Callable], Any]


class Runner:
    def __init__(self, cfg: RLinfConfig, placement: Placement, make_workflow: WorkflowFactory,
                 config_name: str = "run", resume: Optional[str] = None, cluster: Optional[Cluster] = None):
        """`cluster`: one already started for this run (its Ray and files); else `start()` starts one,
        and `close()` shuts it down either way."""
        self.cfg, self.placement = cfg, placement
        self.events: List[dict] = []
        self.workflow = make_workflow(cfg, placement, self.phase)
        self.schedule = make_schedule(cfg, placement)
        self.config_name = config_name
        self.start_step, self.resume_from = 0, None
        if resume is not None:
            self.resume_from, self.start_step = checkpoints.latest(Path(resume))
        # A checkpoint lives at <run>/checkpoints/step_N: the resumed run continues <run>.
        self.output_dir = str(self.resume_from.parent.parent) if resume is not None else cfg.runner.output_dir
        self.run_dir: Optional[RunDir] = None
        self.cluster: Optional[Cluster] = cluster

    @contextmanager
    def phase(self, name: str, group: str = "controller"):
        """Time a controller-side phase for the timeline."""
        start = time.time()
        try:
            yield
        finally:
            self.events.append({"group": group, "rank": 0, "name": name, "start": start, "end": time.time()})

    def start(self) -> None:
        """Cluster, workers, checkpoint (when resuming), and only then the run directory: a checkpoint
        that does not fit the config is bad input found before any file of the run is touched."""
        # The cluster first: an unreachable address is bad input, reported before anything is written.
        if self.cluster is None:
            self.cluster = Cluster(self.cfg.cluster, workers=self.placement.process_count())
        if self.resume_from is not None and hasattr(self.workflow, "check_checkpoint"):
            self.workflow.check_checkpoint(str(self.resume_from))  # a checkpoint it cannot load is bad input
        with self.phase("start_workers"):
            self.workflow.start(self.cluster)
        if self.resume_from is not None:
            mismatch = self.workflow.checkpoint_mismatch(str(self.resume_from))
            if mismatch is not None:
                raise InputError(mismatch, key=str(self.resume_from))
            with self.phase("load_checkpoint"):
                self.workflow.load_checkpoint(str(self.resume_from), self.start_step)
                self.schedule.load_checkpoint(str(self.resume_from), self.start_step)
            logger.info("resumed from %s (step %d)", self.resume_from, self.start_step)
        self.run_dir = RunDir.create(self.output_dir, self.config_name, to_yaml(self.cfg), self.cfg.runner.tensorboard,
                                     resume_step=self.start_step if self.resume_from is not None else None,
                                     wandb_mode=self.cfg.runner.wandb, wandb_project=self.cfg.runner.wandb_project)
        logger.info("run directory: %s", self.run_dir.path)
        self.run_dir.record_devices(self.cluster.describe(), self.start_step)
        if hasattr(self.workflow, "attach_run_dir"):  # workflows that write files of their own (transcripts)
            self.workflow.attach_run_dir(self.run_dir.path)

    def save_checkpoint(self, step: int) -> None:
        with self.phase("save_checkpoint"):
            # The schedule writes the workflow's checkpoint and its own state (async: the queued batches).
            checkpoints.save(self.run_dir.path, step, lambda path: self.schedule.save_checkpoint(self.workflow, path))

    def fit(self) -> Dict:
        cfg = self.cfg.runner
        wf = self.workflow
        t_start = time.time()
        eval_start = self.run_dir.start_eval() if self.start_step else None
        if eval_start is None:
            self.schedule.enter(wf, "evaluate")
            eval_start = wf.evaluate()
            self.run_dir.log_metrics(0, {f"eval/{k}": v for k, v in eval_start.items()})
        logger.info("eval at start: %s", eval_start)
        samples = tokens = 0.0
        train_time = 0.0
        eval_final, last_step = None, cfg.max_steps  # early stopping (runner.stop_metric) sets both
        progress = Progress(cfg.max_steps, enabled=cfg.progress_bar, initial=self.start_step)
        self.schedule.start(wf, self.start_step, cfg.max_steps)
        try:
            for step in range(self.start_step, cfg.max_steps):
                t0 = time.time()
                with self.phase("step"):
                    batch = self.schedule.next_batch(wf, step)
                    metrics = wf.train(batch)
                    self.schedule.after_update(wf, step)
                dt = time.time() - t0
                if step > self.start_step:  # the first step includes warm-up; throughput leaves it out
                    train_time += dt
                    samples += metrics.get("samples", 0)
                    tokens += metrics.get("tokens", 0)
                metrics.update({"time/step_s": dt, "throughput/samples_per_s": metrics.get("samples", 0) / dt,
                                "throughput/tokens_per_s": metrics.get("tokens", 0) / dt})
                if cfg.eval_interval and (step + 1) % cfg.eval_interval == 0 and step + 1 < cfg.max_steps:
                    self.schedule.enter(wf, "evaluate")
                    evaluation = wf.evaluate()
                    metrics.update({f"eval/{k}": v for k, v in evaluation.items()})
                    if cfg.stop_metric is not None and evaluation[cfg.stop_metric] >= cfg.stop_value:
                        eval_final, last_step = evaluation, step + 1  # greedy and same seeds: no second evaluation
                last = step + 1 == last_step
                if (step + 1) % cfg.log_interval == 0 or last:
                    self.run_dir.log_metrics(step + 1, metrics)
                progress.update(step + 1, metrics)
                if cfg.save_interval and ((step + 1) % cfg.save_interval == 0 or last):
                    self.save_checkpoint(step + 1)
                if last:
                    break
        finally:
            self.schedule.stop(wf)
        dropped = {k: v for k, v in self.schedule.summary.items() if k.startswith("dropped/")}
        if dropped:  # batches produced but never trained on, by reason (the schedule logged each)
            self.run_dir.log_metrics(last_step, dropped)
        progress.close()
        if eval_final is None:
            self.schedule.enter(wf, "evaluate")
            eval_final = wf.evaluate()
            self.run_dir.log_metrics(last_step, {f"eval/{k}": v for k, v in eval_final.items()})
        else:
            logger.info("stopping at step %d: eval %s %.4g >= runner.stop_value %.4g", last_step, cfg.stop_metric,
                        eval_final[cfg.stop_metric], cfg.stop_value)
        logger.info("eval at end: %s", eval_final)
        summary = {
            "eval": {"start": eval_start, "final": eval_final},
            "steps": last_step,
            "stopped_early": last_step < cfg.max_steps,
            "resumed_from_step": self.start_step,
            "throughput": {"samples_per_s": samples / max(train_time, 1e-9),
                           "tokens_per_s": tokens / max(train_time, 1e-9),
                           "train_time_s": train_time},
            "wall_time_s": time.time() - t_start,
            "placement": self.placement.as_dict(),
            "schedule": {"name": self.schedule.name, **self.schedule.summary},
        }
        self.run_dir.write_summary(summary)
        return summary

    def close(self) -> None:
        """Collect timelines, stop every group (dead ranks are skipped), close the run directory; the
        cluster's shutdown (which removes every file of the run) runs whatever fails before it."""
        try:
            events = list(self.events)
            for group in getattr(self.workflow, "groups", []):
                try:
                    events += group.pop_events(timeout=10.0)
                except (RuntimeError, TimeoutError) as e:
                    logger.warning("no timeline from %s: %s", group.name, e)
                group.shutdown()
            if self.run_dir is not None:
                if self.cfg.runner.timeline:
                    self.run_dir.write_timeline(events)
                if self.cfg.runner.plots:
                    self.run_dir.write_plots(events)
                self.run_dir.close()
        finally:
            if self.cluster is not None:
                self.cluster.shutdown()


def _raise_if_nodes_lost(cluster: Optional[Cluster], failure: BaseException) -> None:
    """A failure of a run that spans nodes may be a node that left the Ray cluster: then the run
    stops naming it (NodeLostError) instead of restarting groups onto devices that are gone."""
    if cluster is None or cluster.single_node or not ray.is_initialized():
        return
    lost = cluster.lost_nodes()
    if lost:
        raise NodeLostError(lost, cluster.devices, failure) from failure


def run(cfg: RLinfConfig, placement: Placement, make_workflow: WorkflowFactory, config_name: str = "run",
        resume: Optional[str] = None, cluster: Optional[Cluster] = None) -> Dict:
    """Run to `runner.max_steps`. Any worker-side failure (`RunFailure`: a dead or failing rank of any
    group, a missed deadline, a broken channel or weight sync; or a Ray error) stops every group; with
    restarts left (`runner.max_restarts`) the groups start again from the newest complete checkpoint.
    The caller's `cfg` is never changed (restarts run on a copy). `cluster`: started already for the
    first attempt (it is shut down here in every case); a restart starts a new one."""
    cfg = copy.deepcopy(cfg)
    restarts = 0
    while True:
        try:
            runner = Runner(cfg, placement, make_workflow, config_name, resume, cluster=cluster)
        except BaseException:
            if cluster is not None:
                cluster.shutdown()
            raise
        cluster = None  # the runner owns it now: its close() shuts it down
        try:
            runner.start()
            summary = runner.fit()
            summary["restarts"] = restarts
            runner.run_dir.write_summary(summary)
            logger.info("run directory: %s", runner.run_dir.path)
            return summary
        except RESTARTABLE as e:
            _raise_if_nodes_lost(runner.cluster, e)
            if restarts >= cfg.runner.max_restarts:
                raise
            restarts += 1
            if runner.run_dir is not None:  # else it failed while starting: the same start again
                has_checkpoint = any((runner.run_dir.path / "checkpoints").glob("step_*/COMPLETE"))
                resume = str(runner.run_dir.path) if has_checkpoint else None
                cfg.runner.output_dir = str(runner.run_dir.path)
            logger.warning("%s: %s\nrestarting worker groups (%d/%d) from %s", type(e).__name__, e, restarts,
                           cfg.runner.max_restarts, resume or "scratch")
        finally:
            runner.close()
