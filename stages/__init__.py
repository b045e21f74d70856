"""The pipeline's stage scripts. dvc.yaml runs each as ``python -m stages.<name>`` from the
project root, so the ``rnnlm`` package they import is the one beside them (also in DVC's copy of
the project for a queued experiment), whatever else is installed."""
