"""Stage `download`: fetch the corpus named by params `download` into data/raw/.

Outputs data/raw/corpus.txt, or data/raw/{train,val,test}.txt for a corpus that comes split (ptb,
or a {train, val, test} mapping), and data/raw/source.json (see rnnlm.download.fetch_corpus).
A local corpus file must lie under data/corpora/, this stage's DVC dependency, so that DVC
tracks its content; a link there may point only inside the project.
Prints one line per file written.
"""

from rnnlm import params, paths
from rnnlm.download import fetch_corpus, link_target
from rnnlm.errors import stage_main


@stage_main
def main() -> None:
    cfg = params.load_section("download")
    rec = fetch_corpus(cfg, paths.RAW, local_dir=paths.CORPORA)
    if "splits" not in rec:
        print(f"download: {rec['corpus']}: {_describe(rec)}")
    for split, r in rec.get("splits", {}).items():
        print(f"download: {rec['corpus']}: {split}: {_describe(r)}")


def _describe(r: dict) -> str:
    member = f" (member {r['member']})" if "member" in r else ""
    target = link_target(r["source"]) if r["kind"] == "path" else None
    link = f" (a link to {target})" if target else ""
    return f"{r['bytes']} bytes from {r['source']}{link}{member}, sha256 {r['sha256'][:12]}"


if __name__ == "__main__":
    main()
