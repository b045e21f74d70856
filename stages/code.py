"""Stage `code`: data/code/<script>.sha256 for every other stage script: a hash of the script and
of every rnnlm module it imports, directly or not, without comments and docstrings, followed by
the list of those files. Each stage depends on its own file (see rnnlm/code.py)."""

from pathlib import Path

from rnnlm import paths
from rnnlm.code import stage_fingerprints
from rnnlm.errors import stage_main
from rnnlm.fileio import write_text


@stage_main
def main() -> None:
    root = Path(__file__).resolve().parents[1]
    out = root / paths.CODE
    for name, (digest, files) in stage_fingerprints(root).items():
        if name == Path(__file__).stem:
            continue
        listing = "".join(f"{f.relative_to(root).as_posix()}\n" for f in files)
        write_text(out / f"{name}.sha256", f"{digest}\n{listing}")
        print(f"code: {name}: {digest[:12]} ({len(files)} files)")


if __name__ == "__main__":
    main()
