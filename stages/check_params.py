"""Stage `check-params`: validate every section of params.yaml (it depends on the whole file).

The other stages validate the sections they read; this one also catches a section that no stage
reads, such as a misspelled `lstn:` added by `dvc exp run -S +lstn.hidden=12`, which would
otherwise rerun nothing and record an experiment that changed nothing.
"""

from rnnlm import params
from rnnlm.errors import stage_main


@stage_main
def main() -> None:
    raw = params.read_params()
    sections = params.validate_all(raw)
    print(f"check-params: params.yaml is valid ({', '.join(sections)})")
    unlisted = params.unlisted_models(raw, params.load_models(params=raw))
    if unlisted:
        print(f"check-params: not trained (not in models): {', '.join(unlisted)}")


if __name__ == "__main__":
    main()
