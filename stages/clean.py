"""Stage `clean`: data/raw/corpus.txt -> data/clean/corpus.txt + metrics/clean.json (params `clean`)."""

import sys

from rnnlm import params, paths
from rnnlm.clean import letters_warning, run_clean_dir
from rnnlm.errors import stage_main


@stage_main
def main() -> None:
    cfg = params.load_section("clean")
    m = run_clean_dir(cfg, paths.RAW, paths.CLEAN, paths.CLEAN_METRICS)
    for name, s in m.get("splits", {"corpus": m}).items():
        print(
            f"clean: {name}: mode {s['mode']}: {s['chars_in']} -> {s['chars_out']} characters, "
            f"{s['distinct_chars_in']} -> {s['distinct_chars_out']} distinct"
        )
        warning = letters_warning(s)
        if warning:
            print(f"warning: {name}: {warning}", file=sys.stderr)


if __name__ == "__main__":
    main()
