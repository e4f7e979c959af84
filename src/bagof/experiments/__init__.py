"""The experiment layer, above training: what trains many runs and reads them back.

- ``launch``: runs one training per process (local workers, SLURM via submitit), with the store's lock and the
  interrupt handling;
- the tables as declarative sweeps (spec files in the top-level ``sweeps/``): ``spec`` and ``invocation`` (what
  a row's config is), ``runner`` (scheduling, the result cache), ``store`` (MLflow look-ups), ``stats`` (the
  decision rule), ``report``, ``archive`` (run records), ``claims`` (the ledger), ``convergence``;
  CLI ``python -m bagof.experiments {run,report,archive} sweeps/tableN.yaml``;
- ``search``: the GA hyperparameter search on Optuna.

Nothing below (training, models, data, evaluation, the run identity) imports from here."""
