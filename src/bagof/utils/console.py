"""The run's console: one line per epoch (a Lightning callback of the loop, not a feature: those are in
``bagof.callbacks``), and library messages that say nothing about the run silenced."""

from __future__ import annotations

import logging
import time

import lightning as L

log = logging.getLogger("bagof")


class EpochSummary(L.Callback):
    """One console line per epoch (loss, learning rate, images/s, AP when evaluated): readable in logs
    of batch jobs, where a progress bar is off."""

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0, self._n = time.time(), 0
        self._t1 = self._t0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._n += len(batch[0])
        self._t1 = time.time()

    def on_train_epoch_end(self, trainer, pl_module):  # Lightning calls this after the epoch's validation
        m = trainer.callback_metrics
        secs = self._t1 - self._t0
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        ap = (
            "".join(
                f"  {k} {pl_module.last_metrics[k]:.3f}"
                for k in pl_module.summary_metrics
                if k in pl_module.last_metrics
            )
            if pl_module.evaluated_now
            else ""
        )
        log.info(
            "epoch %d/%d  loss %.3f  lr %.2e  %.1f img/s (training)%s",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            float(m.get("train/loss_epoch", m.get("train/loss", float("nan")))),
            lr,
            self._n / max(secs, 1e-9),
            ap,
        )


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_known_noise() -> None:
    """Silences library messages that say nothing about the run: Lightning's advert for its cloud logger and
    torch's pytree deprecation notice that Lightning triggers on every fit."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropTip) for f in lg.filters):
            lg.addFilter(_DropTip())
