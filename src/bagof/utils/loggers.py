"""Lightning's MLflow logger with one change: a successful fit leaves the run RUNNING, and
``bagof.train.fit`` marks it FINISHED only after its artifacts and timing are logged, so the result cache
never reuses a run that was killed in between. Failures are marked FAILED as Lightning does."""

from __future__ import annotations

from lightning.pytorch.loggers import MLFlowLogger as _MLFlowLogger


class MLFlowLogger(_MLFlowLogger):
    def finalize(self, status: str = "success") -> None:
        if status in ("success", "finished"):
            if self._initialized and self._checkpoint_callback:
                self._scan_and_log_checkpoints(self._checkpoint_callback)
            return
        super().finalize(status)
