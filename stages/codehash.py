"""Stage `code`: data/code/<script>.sha256 for every other stage script: a hash of the script and
of every rnnlm module it imports, directly or not, without comments and docstrings, followed by
the list of those files. Each stage depends on its own file (see rnnlm/codehash.py)."""
import sys
from pathlib import Path

# Import the package beside this script, not another checkout installed in the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnnlm.codehash import stage_fingerprints  # noqa: E402
from rnnlm.errors import stage_main  # noqa: E402
from rnnlm.fileio import write_text  # noqa: E402


@stage_main
def main() -> None:
    root = Path(__file__).resolve().parents[1]
    out = root / "data" / "code"
    for name, (digest, files) in stage_fingerprints(root).items():
        if name == Path(__file__).stem:
            continue
        listing = "".join(f"{f.relative_to(root).as_posix()}\n" for f in files)
        write_text(out / f"{name}.sha256", f"{digest}\n{listing}")
        print(f"code: {name}: {digest[:12]} ({len(files)} files)")


if __name__ == "__main__":
    main()
