"""Tables as declarative sweeps: spec files in ``sweeps/``, a runner with an MLflow result cache, and
reports beside the paper's numbers. CLI: ``python -m bagof.sweeps {run,report} sweeps/tableN.yaml``."""
