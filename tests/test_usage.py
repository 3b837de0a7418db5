"""behavior.usage: per-command help read from conf/, and command-line values quoted so Hydra reads them as typed."""

from __future__ import annotations

import textwrap

import pytest

from behavior.config import compose_config
from behavior.usage import command_help, override_hint, quote_overrides, read_notes


@pytest.fixture(scope="module")
def helps():
    return {name: command_help(name) for name in ("train", "evaluate", "predict", "live", "bench")}


def rows(text: str) -> dict[str, str]:
    """``key=default`` -> its description (continuation lines joined), from the help's two-column lines."""
    out, last = {}, None
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and "=" in line.split()[0]:
            left, _, rest = line[2:].partition("  ")
            last = left.strip()
            out[last] = rest.strip()
        elif line.startswith(" " * 30) and last:
            out[last] = (out[last] + " " + line.strip()).strip()
        else:
            last = None
    return out


def test_lines_fit_a_100_column_terminal(helps):
    for name, text in helps.items():
        assert max(map(len, text.splitlines())) <= 100, name


@pytest.mark.parametrize("name", ["evaluate", "predict"])
def test_commands_without_groups_list_none(helps, name):
    text = helps[name]
    assert "Config groups" not in text
    for group in ("model", "transform", "decode", "sampling", "optim", "trainer", "data", "experiment", "roi"):
        assert not any(left.startswith(f"{group}=") for left in rows(text)), (name, group)
    assert "behaviornet" not in text and "r3d_18" not in text


def test_evaluate_help(helps):
    text = helps["evaluate"]
    assert text.startswith("usage: python -m behavior.evaluate checkpoint=PATH data.root=DIR\n")
    assert "Sampling, transforms and class names come from the checkpoint." in text
    table = rows(text)
    assert table["data.root=null"] == "folder-per-class tree; class folders must be among the checkpoint's classes"
    assert table["decode.backend=null"] == "null = the backend the checkpoint was trained with"
    assert table["checkpoint=null"] == "a behavior.train checkpoint (best.pt)"
    assert "hydra.run.dir=outputs/evaluate/${now:%Y-%m-%d_%H-%M-%S}" in table
    assert "Override any key as key=value" in text


def test_predict_help(helps):
    table = rows(helps["predict"])
    assert helps["predict"].startswith("usage: python -m behavior.predict checkpoint=PATH input=DIR_OR_FILE")
    assert table["checkpoint=null"] == "a behavior.train checkpoint (best.pt), or its export (.onnx: ONNX Runtime; " \
        ".pt2: torch)"
    assert table["extensions=[.mp4, .avi, .mkv, .mov, .webm, .m4v, .mpg, .mpeg, .wmv, .flv, .ts]"] == \
        "files searched for under a folder"
    # a comment continued on the comment-only lines under it
    assert table["on_mismatch=refuse"].endswith("(the first number free or holding this run's)")
    assert table["predict.stride=null"].startswith("seconds between window starts")
    assert not any(left.startswith("hydra.") for left in table), "predict has no run folder"


def test_live_help_lists_only_its_roi_group(helps):
    text = helps["live"]
    table = rows(text)
    assert "roi=null" in table and "none by default" in table["roi=null"]
    assert "face, none, person" in table["roi=null"]
    assert not any(left.split("=")[0] in ("model", "decode", "transform", "sampling") for left in table)
    assert table["drop=auto"].endswith("true | false force it")
    assert not any(left.startswith("hydra.") for left in table)


def test_train_help_lists_groups_options_and_group_keys(helps):
    text = helps["train"]
    table = rows(text)
    assert text.startswith("usage: python -m behavior.train [group=option ...] [key=value ...]\n")
    assert table["model=behaviornet"].startswith("options: behaviornet, behaviornet_mobilenet, behaviornet_resnet18, "
                                                 "mc3_18, r2plus1d_18, r3d_18, s3d,")
    assert "default, letterbox, small, small_portrait" in table["transform=default"]
    assert "none by default" in table["experiment=null"] and "basketball, surveillance_fight" in \
        table["experiment=null"]
    assert "_self_" not in text and "job_logging" not in text
    assert table["trainer.epochs=40"] == ""
    assert table["trainer.patience=10"] == "early stopping: epochs without a better validation top-1; 0 = off"
    assert table["model.name=behaviornet"] == ""
    assert table["model.temporal_pool=mean"].startswith("mean | max | attention")
    # roi=none builds on roi=face: the keys it inherits keep face.yaml's descriptions
    assert table["roi.kind=none"] == "" and table["roi.margin=0.25"].startswith("the union of the face boxes")
    assert "hydra.run.dir=outputs/train/${now:%Y-%m-%d_%H-%M-%S}" in table
    assert "Keys of trainer=default (conf/trainer/default.yaml):" in text


def test_bench_help_uses_its_own_values_and_comments(helps):
    table = rows(helps["bench"])
    assert table["trainer.epochs=10"].startswith("One epoch budget for every model.")
    # the option's description of the key first, then the bench's reason for its value
    assert table["trainer.report_on=last"].startswith("checkpoint the test report uses")
    assert "picks noise" in table["trainer.report_on=last"]
    assert table["bench.models=[behaviornet, behaviornet_noattn, r3d_18, r2plus1d_18]"].startswith("Each entry is")
    assert any(left.startswith("bench.variants={behaviornet_noattn, flow,") for left in table)


def test_comment_parser(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(textwrap.dedent("""\
        # python -m behavior.x key=VALUE
        # What x does.
        defaults:
          - _self_
          - roi: null     # the region
        plain: 1
        exts: [.mp4, .avi]   # files # with a hash
        nested:
          # above the key
          inner: 'a # b'     # trailing
                             # continued
          # not a continuation: above the next key
          other: {a: 1}
        after: 2 # after
        """), encoding="utf-8")
    header, notes = read_notes(path)
    assert header == ["python -m behavior.x key=VALUE", "What x does."]
    assert notes == {"defaults.roi": "the region", "exts": "files # with a hash",
                     "nested.inner": "above the key trailing continued",
                     "nested.other": "not a continuation: above the next key", "after": "after"}


TRICKY = ["clips/café", "clips/[a]/x.mp4", "~/clips", "my clips", "clips/café [1]", "C:\\clips\\café",
          "\\\\server\\share\\é", "a#b.mp4", "a=b.mp4", "x(1).mp4", "it's.mp4", 'say "hi".mp4', "it\\'s",
          "end\\é\\", "[2023] clip.mp4", "{x} y.mp4", "a;b&c!.mp4", "😀.mp4", "clips/$x ü"]


@pytest.mark.parametrize("value", TRICKY)
def test_quoted_values_compose_to_the_text_typed(value):
    quoted, = quote_overrides([f"input={value}"])
    assert compose_config("predict", [quoted]).input == value
    assert override_hint(f"input={value}") is None


@pytest.mark.parametrize("override", ["+extra=clips/café", "++input=~/x"])
def test_added_keys_are_quoted_too(override):
    key, _, value = override.partition("=")
    quoted, = quote_overrides([override])
    assert quoted == f"{key}='{value}'"
    assert compose_config("predict", [quoted])[key.lstrip("+")] == value


@pytest.mark.parametrize("override", ["input=clips/a.mp4", "top_k=5", "extensions=[.mp4,.avi]", "input=my clips",
                                      "input=${output}", "num_views=null", "input='clips/café'", "~input",
                                      "model=r3d_18,mc3_18", "input=", "input=[1,2", "input={a:1", "input=choice(a,b",
                                      "input=chioce(a,b)", "input=range(1,3", "input=${oops", "input='bad'x'"])
def test_left_alone(override):
    assert quote_overrides([override]) == [override]


def test_flags_and_their_values_are_left_alone():
    args = ["--cfg", "job", "-cd", "conf=é", "--config-name=a=é", "-m", "input=é"]
    assert quote_overrides(args) == args[:-1] + ["input='é'"]


def test_values_that_parse_keep_their_meaning():
    cfg = compose_config("predict", quote_overrides(["extensions=[.mp4,.avi]", "top_k=5", "output=${input}.csv",
                                                     "input=clips/é"]))
    assert list(cfg.extensions) == [".mp4", ".avi"] and cfg.top_k == 5
    assert cfg.output == "clips/é.csv"


@pytest.mark.parametrize("override, words", [
    ("input=[1,2", "brackets"), ("input=chioce(a,b)", "sweep functions"), ("input=${oops", "interpolation"),
    ("input='bad'x'", "\\'"), ("café=1", "not a key"), ("justtext", "not key=value")])
def test_hints_for_what_quoting_cannot_fix(override, words):
    hint = override_hint(override)
    assert hint and words in hint and "\n" not in hint


@pytest.mark.parametrize("value", ["[it's", "range(1,'2"])
def test_hints_suggest_a_quoting_that_works(value):
    suggestion = override_hint(f"input={value}").rsplit(": ", 1)[1]
    assert compose_config("predict", [suggestion]).input == value
