"""vocab stage: data/clean/corpus.txt -> data/vocab.json, data/tokens/{train,val,test}.npy,
data/heldout/{val,test}.txt, metrics/corpus.json, metrics/vocab/{token_freq.csv,zipf.png}."""

from rnnlm import paths
from rnnlm.errors import stage_main
from rnnlm.params import load_section
from rnnlm.vocab import build, read_clean, read_source, write_outputs


@stage_main
def main():
    cfg = load_section("vocab")
    vocab, encoded, stats, parts = build(read_clean(paths.CLEAN), cfg, read_source(paths.CLEAN))
    write_outputs(vocab, encoded, stats, parts=parts)
    print(
        f"vocab: {len(vocab)} {cfg.level} types; tokens {stats['tokens']}; OOV {stats['oov_rate']}; "
        f"<unk> {stats['unk_rate']}"
    )


if __name__ == "__main__":
    main()
