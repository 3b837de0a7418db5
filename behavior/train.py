"""``python -m behavior.train``: train a behavior classifier and report per-class results on the test split."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from behavior.cli import entry_point, hydra_run_dir, select_device
from behavior.config import require_number
from behavior.data.prepare import clip_cache, clip_regions, make_loader, prepare_data
from behavior.data.roi import roi_config
from behavior.data.sampling import sampling_config
from behavior.data.settings import check_keys, data_config
from behavior.data.transforms import build_transform, transform_config
from behavior.engine.checkpoint import load_checkpoint
from behavior.engine.loop import amp_enabled
from behavior.engine.optim import build_loss, build_optimizer, build_scheduler, optim_config
from behavior.engine.trainer import FitConfig, FitState, describe_epoch, fit, restore, seed_everything, trainer_config
from behavior.errors import ConfigError
from behavior.evaluate import evaluate_split
from behavior.models import build_model
from behavior.report import write_history
from behavior.video.base import check_backend

TRAIN_KEYS = ("data", "decode", "sampling", "roi", "transform", "model", "optim", "trainer", "seed")
RUN_FILES = ("last.pt", "best.pt", "metrics.json")


def resume_path(resume: str | None, run_dir: Path) -> str | None:
    """The checkpoint to continue from: ``trainer.resume`` as given, or ``auto`` = this run folder's last.pt if any.

    A folder that already holds a run is never trained over from scratch: that would overwrite its checkpoints
    and report."""
    if resume == "auto":
        return str(run_dir / "last.pt") if (run_dir / "last.pt").is_file() else None
    if not resume:
        found = [name for name in RUN_FILES if (run_dir / name).exists()]
        if found:
            raise ConfigError(f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}): continue it with "
                              "trainer.resume=auto, or choose another hydra.run.dir")
    return resume


def train_run(cfg: DictConfig, run_dir: Path, split_seed: int | None = None) -> dict:
    """Train ``cfg.model`` on ``cfg.data`` into ``run_dir`` and report on test (or val).

    Returns ``{"metrics", "parameters", "class_names", "history", "eval_seconds", "eval_clips", "wall_seconds"}``;
    ``metrics`` is empty when there is no split to report on. ``split_seed`` (default ``cfg.seed``) draws the
    train/val/test split, so runs with different seeds can share one split.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    require_number("seed", cfg.seed, integer=True)
    seed_everything(cfg.seed)
    device = select_device(cfg.trainer.device)
    sampling = sampling_config(cfg.sampling)
    transform = transform_config(cfg.transform)
    roi = roi_config(cfg.get("roi"))
    trainer = cfg.trainer
    backend = check_backend(cfg.decode.backend)
    # Every group is checked now, before clips are scanned or generated, not after hours of training.
    report_on = trainer_config(trainer).report_on
    optim = optim_config(cfg.optim)
    clip_timeout = data_config(cfg.data).decode_timeout
    check_keys(cfg.decode, "decode", ("backend",))
    resume = resume_path(trainer.get("resume"), run_dir)
    build_model(cfg.model, 2)  # a bad model option stops the run here, before clips are generated or scanned
    cache = clip_cache(cfg.data, backend, transform)

    split_seed = cfg.seed if split_seed is None else split_seed
    data = prepare_data(cfg.data, backend, split_seed, run_dir, progress=trainer.progress)
    sizes = {name: len(recs) for name, recs in data.split.parts().items()}
    print(f"{len(data.class_names)} classes {data.class_names}; clips: {sizes}; run dir: {run_dir}")
    regions = clip_regions(data.split.parts(), roi, backend, data.num_frames, run_dir, trainer.progress, cache)
    if cache is not None:
        print(cache.summary([r.path for recs in data.split.parts().values() for r in recs], data.num_frames,
                            regions))

    def loader(name: str, train: bool):
        return make_loader(data.split.parts()[name], data.class_to_idx, sampling, build_transform(transform, train),
                           train, trainer.batch_size if train else trainer.eval_batch_size, trainer.num_workers,
                           backend, data.num_frames, cfg.seed, pin_memory=device.type == "cuda", cache=cache,
                           clip_timeout=clip_timeout, regions=regions)

    train_loader, val_loader = loader("train", True), loader("val", False)
    model = build_model(cfg.model, len(data.class_names)).to(device)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, len(train_loader), trainer.epochs)
    train_labels = [data.class_to_idx[r.label] for r in data.split.train]
    loss_fn = build_loss(cfg.optim, train_labels, len(data.class_names)).to(device)
    amp = amp_enabled(trainer.amp, device)
    # Loss scaling only for float16 (CUDA without bf16); bf16 autocast, on CUDA or CPU, needs none.
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda" and not torch.cuda.is_bf16_supported())
    state = None
    if resume:
        state = restore(resume, model, optimizer, scheduler, scaler, OmegaConf.to_container(cfg.model, resolve=True),
                        list(data.class_names))
    if state is not None:
        print(f"resumed from {resume} after epoch {state.epoch}")
        # The run folder must stay self-contained: bring the best checkpoint so far along with the history.
        previous_best = Path(resume).parent / "best.pt"
        if previous_best.is_file() and previous_best.resolve() != (run_dir / "best.pt").resolve():
            shutil.copy2(previous_best, run_dir / "best.pt")
    params = sum(p.numel() for p in model.parameters())
    print(f"model {cfg.model.name}: {params / 1e6:.2f}M parameters; device {device}{' (AMP)' if amp else ''}")

    extra = {
        "model_config": OmegaConf.to_container(cfg.model, resolve=True),
        "class_names": data.class_names,
        "sampling": OmegaConf.to_container(cfg.sampling, resolve=True),
        "transform": OmegaConf.to_container(cfg.transform, resolve=True),
        "roi": asdict(roi),  # predict, evaluate and live crop the way training did
        "decode": OmegaConf.to_container(cfg.decode, resolve=True),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    fit_cfg = FitConfig(trainer.epochs, trainer.patience, cfg.optim.grad_clip, amp, cfg.seed, trainer.progress,
                        optim.mixup_alpha, len(data.class_names))

    state = state or FitState()

    def on_epoch(row):
        print(describe_epoch(row), flush=True)
        write_history(run_dir, state.history)

    state = fit(model, train_loader, val_loader, optimizer, scheduler, loss_fn, device, fit_cfg, run_dir, extra,
                state, scaler, on_epoch=on_epoch)

    # The final report is on the best (or, trainer.report_on=last, the last) checkpoint, on test (or validation
    # when there is no test split).
    result = {"metrics": {}, "parameters": params, "class_names": list(data.class_names),
              "history": list(state.history), "eval_seconds": 0.0, "eval_clips": 0, "wall_seconds": 0.0}
    split_name = "test" if data.split.test else "val"
    if not data.split.parts()[split_name]:
        print(f"no validation or test clips (data.val_fraction = data.test_fraction = 0): checkpoints in {run_dir}, "
              "no report")
        result["wall_seconds"] = time.perf_counter() - start
        return result
    best = load_checkpoint(run_dir / f"{report_on}.pt")
    model.load_state_dict(best["model_state"])
    eval_start = time.perf_counter()
    metrics = evaluate_split(model, data.split.parts()[split_name], data.class_names, sampling, transform, backend,
                             data.num_frames, device, amp, trainer, run_dir, split_name,
                             extra={"best_epoch": best["epoch"], "epochs_run": state.epoch,
                                    "checkpoint": f"{report_on}.pt"}, cache=cache, clip_timeout=clip_timeout,
                             regions=regions, checkpoint=run_dir / f"{report_on}.pt")
    result.update(metrics=metrics, eval_seconds=time.perf_counter() - eval_start,
                  eval_clips=len(data.split.parts()[split_name]), wall_seconds=time.perf_counter() - start)
    print(f"wall time {result['wall_seconds']:.1f}s; report in {run_dir}")
    return result


@entry_point("train")
def main(cfg: DictConfig) -> float:
    check_keys(cfg, "", TRAIN_KEYS)
    result = train_run(cfg, hydra_run_dir())
    return result["metrics"].get("top1", float("nan"))


if __name__ == "__main__":
    main()
