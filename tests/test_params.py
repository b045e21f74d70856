from pathlib import Path

import pytest
import yaml
from conftest import committed_params, config, run_stage_script

from rnnlm.errors import ParamError, RnnlmError
from rnnlm.params import (
    SCHEMA,
    TrainConfig,
    load_model_config,
    load_section,
    read_params,
    validate_all,
    validate_section,
)


def write(tmp_path, data):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_project_params_file_is_valid():
    params = read_params(Path(__file__).resolve().parents[1] / "params.yaml")
    for name in SCHEMA:
        validate_section(name, params.get(name))  # raises on any problem
    assert params["models"] == ["rnn", "lstm", "gru", "transformer"]  # the model sections, each naming its cell
    assert set(params) == {*SCHEMA, "models", *params["models"]}
    assert [validate_section(m, params[m]).cell for m in params["models"]] == ["rnn", "lstm", "gru", "transformer"]


def test_a_model_section_names_its_cell(tmp_path):
    committed = read_params(Path(__file__).resolve().parents[1] / "params.yaml")
    lstm_big = {**committed["lstm"], "hidden": 512, "epochs": 2}
    big = {**committed, "models": ["lstm", "lstm_big"], "lstm_big": lstm_big}
    model_cfg, train = load_model_config("lstm_big", write(tmp_path, big))
    assert model_cfg.cell == "lstm" and model_cfg.hidden == 512 and model_cfg.layers == committed["lstm"]["layers"]
    assert train.epochs == 2
    assert load_model_config("lstm", write(tmp_path, big))[1].epochs == committed["train"]["epochs"]
    # rnn, gru and transformer are not in models: checked (they name a cell), not trained
    assert set(validate_all(big)) == {*SCHEMA, "lstm", "lstm_big", "rnn", "gru", "transformer"}
    with pytest.raises(ParamError, match=r"gru\.hidden: expected an integer"):
        validate_all({**big, "gru": {**committed["gru"], "hidden": "big"}})
    # the adaptive rows' lists name trained models (checked by check-params, before any training)
    with pytest.raises(
        ParamError, match=r"evaluate\.cache: 'lsmt' is not in models \(lstm, lstm_big\) \(did you mean 'lstm'\?\)"
    ):
        validate_all({**big, "evaluate": {**committed["evaluate"], "cache": ["lsmt"]}})
    assert validate_all({**big, "evaluate": {**committed["evaluate"], "dynamic": ["lstm"]}})["evaluate"].dynamic == [
        "lstm"
    ]
    # every key is set in the section itself (DVC tracks a stage's params by section)
    with pytest.raises(
        ParamError,
        match=r"lstm_big: impl, hidden, .*bptt, weight_drop, embedding_dropout, locked_dropout, ar, tar: missing",
    ):
        load_model_config("lstm_big", write(tmp_path, {**big, "lstm_big": {"cell": "lstm"}}))
    cases = [
        ({"lstn": {"hidden": 12}}, r"^params\.yaml: lstn: unknown section; did you mean lstm\?$"),
        ({"train": {**committed["train"], "cell": "lstm"}}, r"train\.cell: unknown key"),
        ({"models": ["rnn", "lstm", "gru", "extra"]}, r"models: lists 'extra', which has no section in params\.yaml"),
        ({"models": ["rnn", "../x"]}, r"models: '\.\./x' is not a model section name"),
        ({"models": ["rnn", "train"]}, r"models: 'train' is not a model section name"),
        ({"models": ["rnn", "rnn"]}, r"models: \['rnn', 'rnn'\] names a section twice"),
        ({"models": []}, r"models: expected a non-empty list of section names"),
        ({"gru": {**committed["gru"], "cell": "transfomer"}}, r"gru\.cell: unknown value 'transfomer'"),
        ({"gru": {**committed["gru"], "cell": "transformer"}}, r"gru\.impl: unknown key"),
    ]
    for update, message in cases:
        with pytest.raises(ParamError, match=message):
            validate_all({**committed, **update})
    with pytest.raises(
        RnnlmError,
        match=r"unknown model 'lstm_big' \(did you mean 'lstm'\?\); params\.yaml's models: rnn, lstm, gru, transformer",
    ):
        load_model_config("lstm_big", write(tmp_path, committed))


def test_params_yaml_is_the_one_source_of_defaults(tmp_path):
    """Every key comes from params.yaml: a key missing there is an error naming it, not a value
    from somewhere else; a complete section becomes its typed config object."""
    committed = read_params(Path(__file__).resolve().parents[1] / "params.yaml")
    partial = {k: v for k, v in committed["train"].items() if k != "optimizer"}
    with pytest.raises(ParamError, match=r"train\.optimizer: missing: params\.yaml sets every key"):
        load_section("train", write(tmp_path, {"train": partial}))
    cfg = load_section("train", write(tmp_path, {"train": {**partial, "optimizer": "sgd", "epochs": 3}}))
    assert isinstance(cfg, TrainConfig) and cfg.epochs == 3 and cfg.optimizer == "sgd"
    lstm = {k: v for k, v in committed["lstm"].items() if k != "hidden"}
    with pytest.raises(ParamError, match=r"lstm\.hidden: missing"):
        load_model_config("lstm", write(tmp_path, {"train": committed["train"], "lstm": lstm}))
    with pytest.raises(
        ParamError,
        match=r"lstm: cell, impl, hidden, .*cutoffs, bptt, weight_drop, .*, locked_dropout, ar, tar: missing",
    ):
        load_model_config("lstm", write(tmp_path, {"train": committed["train"], "lstm": {}}))


def test_unknown_key_names_the_nearest_valid_one(tmp_path):
    with pytest.raises(ParamError, match=r"lstm\.hiden: unknown key; did you mean lstm\.hidden\?"):
        load_model_config(
            "lstm",
            write(
                tmp_path, {**read_params(Path(__file__).resolve().parents[1] / "params.yaml"), "lstm": {"hiden": 12}}
            ),
        )


def test_unknown_section_is_reported(tmp_path):
    with pytest.raises(ParamError, match="trian: unknown section; did you mean train"):
        load_section("vocab", write(tmp_path, {"trian": {}}))


@pytest.mark.parametrize(
    "section,value,pattern",
    [
        ("train", {"optimizer": "adamm"}, r"train\.optimizer: unknown value 'adamm' \(did you mean 'adam'\?\)"),
        ("train", {"lr": 0}, r"train\.lr: must be positive"),
        ("train", {"epochs": -1}, r"train\.epochs: must be positive"),
        ("train", {"epochs": 2.5}, r"train\.epochs: expected an integer"),
        ("train", {"batch_size": True}, r"train\.batch_size: expected an integer"),
        (
            "train",
            {"precision": "bf61"},
            r"train\.precision: unknown value 'bf61' \(did you mean 'bf16'\?\); choose one of auto, fp32, bf16, fp16",
        ),
        ("lstm", {"precision": "bfloat16"}, r"lstm\.precision: unknown value 'bfloat16' \(did you mean 'bf16'\?\)"),
        ("vocab", {"split": [0.9, 0.2, 0.1]}, r"vocab\.split: fractions must sum to 1 .*got 1\.2"),
        ("vocab", {"split": [0.5, 0.05, 0.05]}, r"vocab\.split: fractions must sum to 1 .*got 0\.6"),  # would drop 40%
        (
            "lstm",
            {"tie_weights": True, "embedding": 32, "hidden": 64},
            r"lstm\.tie_weights: needs lstm\.embedding == lstm\.hidden",
        ),
        (
            "gru",
            {"tie_weights": True, "embedding": 8, "hidden": 8, "softmax": "adaptive"},
            r"gru\.tie_weights: cannot be combined",
        ),
        ("rnn", {"cutoffs": [100, 50]}, r"rnn\.cutoffs: must be positive and increasing"),
        (
            "gru",
            {"cutoffs": [2000]},
            r"gru\.cutoffs: \[2000\] is unused: gru\.softmax is full, which has no clusters; "
            r"set softmax: adaptive, or cutoffs: \[\]",
        ),
        (
            "download",
            {"corpus": {"train": "a.txt", "val": "b.txt"}},
            r"download\.corpus: a pre-split corpus names exactly train, val and test",
        ),
        ("download", {"corpus": {"train": "a", "val": "b", "test": {"src": "c"}}}, r"download\.corpus: test: expected"),
        ("train", {"max_steps": -1}, r"train\.max_steps: must be >= 0"),
        ("train", {"lr": "fast"}, r"train\.lr: expected a number, got 'fast'"),
        ("vocab", {"split": [0.9, -0.1, 0.2]}, r"vocab\.split: fractions must not be negative"),
        ("vocab", {"split": [0.9, 0.1]}, r"vocab\.split: must list three fractions"),
        ("clean", {"mode": "letter"}, r"clean\.mode: unknown value 'letter' \(did you mean 'letters'\?\)"),
        ("sample", {"strategy": "topk"}, r"sample\.strategy: unknown value 'topk'"),
        ("evaluate", {"ngram_order": 0}, r"evaluate\.ngram_order: must be positive"),
        ("evaluate", {"cache": "lstm"}, r"evaluate\.cache: expected true, false or a list of model names, got 'lstm'"),
        ("evaluate", {"dynamic": [1]}, r"evaluate\.dynamic: expected true, false or a list of model names, got \[1\]"),
        ("train", {"lr": float("inf")}, r"train\.lr: expected a finite number, got inf"),
        ("vocab", {"split": [0.9, "half", 0.05]}, r"vocab\.split: expected a list of numbers"),
        # values past what torch, numpy and the timer thread take: bounded in the schema, not an OverflowError
        (
            "train",
            {"seed": 18446744073709551616},
            r"train\.seed: must be in \[0, 4\.29497e\+09\], got 18446744073709551616",
        ),
        ("lstm", {"seed": 2**32}, r"lstm\.seed: must be in \[0, "),
        ("sample", {"seed": -1}, r"sample\.seed: must be in \[0, "),
        ("download", {"timeout": 1e10}, r"download\.timeout: must be in \[0, 3600\], got 10000000000\.0"),
        ("download", {"timeout": 1e9}, r"download\.timeout: must be in \[0, 3600\]"),
        ("download", {"timeout": 0}, r"download\.timeout: must be positive"),
        ("download", {"retries": 10**6}, r"download\.retries: must be in \[0, 100\]"),
    ],
)
def test_bad_values_name_the_param(section, value, pattern):
    with pytest.raises(ParamError, match=pattern):
        config(section, value)  # the committed section with this one change


def test_model_section_overrides_train_values(tmp_path):
    base = read_params(Path(__file__).resolve().parents[1] / "params.yaml")
    p = write(
        tmp_path,
        {
            "train": {**base["train"], "lr": 0.1, "epochs": 4},
            "gru": {**base["gru"], "lr": 0.5, "hidden": 7},
            "lstm": base["lstm"],
        },
    )
    model, train = load_model_config("gru", p)
    assert model.hidden == 7 and train.lr == 0.5 and train.epochs == 4
    _, train_lstm = load_model_config("lstm", p)
    assert train_lstm.lr == 0.1


def test_model_overrides_are_validated(tmp_path):
    with pytest.raises(ParamError, match=r"rnn\.optimizer: unknown value 'sgdd'"):
        load_model_config(
            "rnn",
            write(
                tmp_path,
                {**read_params(Path(__file__).resolve().parents[1] / "params.yaml"), "rnn": {"optimizer": "sgdd"}},
            ),
        )


def test_unknown_model_and_missing_file(tmp_path):
    with pytest.raises(RnnlmError, match="unknown model 'lsmt' \\(did you mean 'lstm'\\?\\)"):
        load_model_config("lsmt", write(tmp_path, {}))
    with pytest.raises(RnnlmError, match="not found"):
        read_params(tmp_path / "missing.yaml")


def test_invalid_yaml_is_one_clear_error(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(RnnlmError, match="not valid YAML"):
        read_params(p)


def test_a_float_written_without_a_dot_is_a_number():
    """YAML 1.1 (PyYAML) reads `lr: 1e-3` as the string '1e-3': accept what users write."""
    assert config("train", yaml.safe_load("lr: 1e-3")).lr == 0.001


def test_a_section_that_is_not_a_mapping_is_named():
    with pytest.raises(ParamError, match=r"clean: must be a mapping, got \[1, 2\]"):
        validate_section("clean", [1, 2])


def test_the_corpus_name_is_normalised_once_for_every_stage():
    """download.corpus: "timemachine " was timemachine for download but not for sample, whose
    default prefixes ("time traveller") are looked up by name."""
    from rnnlm.params import validate_section
    from rnnlm.sample import default_prefixes

    base = committed_params()["download"]
    cfg = validate_section("download", {**base, "corpus": " timemachine \t"})
    assert cfg.corpus == "timemachine" and default_prefixes(cfg.corpus) == default_prefixes("timemachine") != [""]
    split = validate_section(
        "download", {**base, "corpus": {"train": " a.txt", "val": {"source": "b.txt "}, "test": "c"}}
    )
    assert split.corpus == {"train": "a.txt", "val": {"source": "b.txt"}, "test": "c"}


def test_check_params_names_the_model_sections_it_does_not_train(tmp_path):
    committed = read_params(Path(__file__).resolve().parents[1] / "params.yaml")
    write(tmp_path, {**committed, "models": ["lstm"]})
    run = run_stage_script("check_params", tmp_path)
    assert run.returncode == 0, run.stderr
    # in file order
    assert run.stdout.splitlines()[-1] == "check-params: not trained (not in models): gru, rnn, transformer"
