"""vocab stage: data/clean/corpus.txt -> data/vocab.json, data/tokens/{train,val,test}.npy,
data/heldout/{val,test}.txt, metrics/corpus.json, metrics/vocab/{token_freq.csv,zipf.png}."""

from pathlib import Path

from rnnlm.errors import stage_main
from rnnlm.params import load_section
from rnnlm.vocab import build, read_clean, read_source, write_outputs


@stage_main
def main():
    cfg = load_section("vocab")
    clean = Path("data/clean")
    vocab, encoded, stats, parts = build(read_clean(clean), cfg, read_source(clean))
    write_outputs(vocab, encoded, stats, parts=parts)
    print(
        f"vocab: {len(vocab)} {cfg.level} types; tokens {stats['tokens']}; OOV {stats['oov_rate']}; "
        f"<unk> {stats['unk_rate']}"
    )


if __name__ == "__main__":
    main()
