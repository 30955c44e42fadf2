"""`examples/transformer_lesion.py --quick`: its numbers recomputed from the network it saved.

The study evaluates deletions through `lesion.stream` (the stacked sweep for
sub-layers, rebuilt graphs for blocks); here the saved network is evaluated
on the same digits with plain `predict`, and its blocks are deleted with
`surgery.remove_layers`, so every number checked comes from another path.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from script_runs import SCRIPT_RUN_TORCH, run_script


@SCRIPT_RUN_TORCH
@pytest.mark.slow
def test_transformer_lesion_quick_numbers_equal_the_saved_network(tmp_path):
    import keras

    import keras_residual  # noqa: F401  (registers the layers the saved network uses)
    from keras_residual.datasets import load_mnist
    from keras_residual.surgery import remove_layers, residual_blocks

    out = tmp_path / "out"
    stdout = run_script("examples/transformer_lesion.py", tmp_path, "--quick", "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    seed = results["seeds"][0]
    assert results["depth"] == 4 and len(results["seeds"]) == 1
    assert sorted(results["figures"]) == ["paths", "studies"]
    assert all((out / name).stat().st_size > 10_000 for name in results["figures"].values())

    data = load_mnist(layout="sequence", verbose=False)
    x, y = data.x_test[:300], data.y_test[:300]
    model = keras.saving.load_model(out / "model_seed0.keras")
    error = float(np.mean(model.predict(x, verbose=0).argmax(-1) != y))
    assert seed["intact_error"] == pytest.approx(error, abs=1e-9)
    assert seed["test_error"] == pytest.approx(error, abs=1e-6)  # model.evaluate's accuracy

    # One whole block (attention + MLP) deleted, each in turn, by rebuilding without it.
    sublayers = residual_blocks(model)
    assert len(sublayers) == 8
    for i, reported in enumerate(seed["block_deletion"]["errors"]):
        pair = [sublayers[2 * i], sublayers[2 * i + 1]]
        deleted = remove_layers(model, pair)
        got = float(np.mean(deleted.predict(x, verbose=0).argmax(-1) != y))
        assert reported == pytest.approx(got, abs=1e-9), (i, reported, got)
    # Every sub-layer alone (the stacked sweep in the study).
    for block, reported in zip(sublayers, seed["sublayer_deletion"]["errors"], strict=True):
        got = float(np.mean(remove_layers(model, [block]).predict(x, verbose=0).argmax(-1) != y))
        assert reported == pytest.approx(got, abs=1e-9), (block.name, reported, got)

    # The table: accuracy kept = (1 - error) / (1 - intact), over the blocks.
    kept = (1 - np.array(seed["block_deletion"]["errors"])) / (1 - error)
    row = re.search(r"\| Accuracy kept after deleting one block[^|]*\|[^|]*\| (\d+)%-(\d+)% \|",
                    stdout)
    assert row, stdout
    assert (int(row[1]), int(row[2])) == (round(100 * kept.min()), round(100 * kept.max()))
    n = seed["paths"]["n_sublayers"]
    lo, hi = seed["paths"]["effective_range"]
    assert n == 8 and 0 <= lo <= hi <= n
    assert seed["paths"]["effective_range_over_n"] == [lo / n, hi / n]


def _tiny_gpt2_preset(folder) -> None:
    """A 4-layer GPT-2 with a byte-level BPE vocabulary of a few words, saved as a preset."""
    import keras
    import keras_hub

    words = ["the", "cat", "sat", "on", "mat", "a", "dog"]
    vocabulary = {"<|endoftext|>": 0}
    for word in words:
        vocabulary.setdefault(word, len(vocabulary))
        vocabulary.setdefault("\u0120" + word, len(vocabulary))  # byte-level BPE: "Ġ" is a space
    for char in sorted(set("".join(words)) | {"\u0120"}):
        vocabulary.setdefault(char, len(vocabulary))
    merges = []
    for word in words:
        for prefix in ("", "\u0120"):
            pieces = list(prefix + word)
            while len(pieces) > 1:
                merges.append(f"{pieces[0]} {pieces[1]}")
                pieces = [pieces[0] + pieces[1], *pieces[2:]]
                vocabulary.setdefault(pieces[0], len(vocabulary))
    tokenizer = keras_hub.tokenizers.GPT2Tokenizer(vocabulary=vocabulary,
                                                   merges=list(dict.fromkeys(merges)))
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(vocabulary), num_layers=4, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=32)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=16)
    keras_hub.models.GPT2CausalLM(backbone, preprocessor).save_to_preset(str(folder))


@SCRIPT_RUN_TORCH
@pytest.mark.slow
def test_transformer_lesion_of_a_keras_hub_preset_scores_keras_hubs_own_next_tokens(tmp_path):
    import keras_hub

    from keras_residual.experiments.transformer import text_windows
    from keras_residual.lesion.stream import next_token_data

    _tiny_gpt2_preset(tmp_path / "preset")
    rng = np.random.default_rng(0)
    text = tmp_path / "text.txt"
    text.write_text(" ".join(rng.choice(["the cat sat on the mat", "a dog sat on a cat",
                                         "the dog"], 60)))
    out = tmp_path / "out"
    stdout = run_script("examples/transformer_lesion.py", tmp_path, "--keras-hub",
                        str(tmp_path / "preset"), "--text", str(text), "--sequence-length", "8",
                        "--sequences", "24", "--draws", "1", "--samples", "4", "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    seed = results["seeds"][0]
    assert results["depth"] == 4 and len(seed["sublayer_deletion"]["errors"]) == 8

    # keras-hub's own language model on the same windows, cut from its own tokenizer's ids.
    causal_lm = keras_hub.models.CausalLM.from_preset(str(tmp_path / "preset"))
    ids = np.asarray(causal_lm.preprocessor.tokenizer(text.read_text()))
    x, y = next_token_data(text_windows(ids, 8, 24))
    assert x.shape == (24, 8)
    import keras

    logits = keras.ops.convert_to_numpy(causal_lm(
        {"token_ids": x, "padding_mask": np.ones_like(x)}, training=False))  # no preprocessing
    error = float(np.mean(logits.argmax(-1) != y))
    assert seed["intact_error"] == pytest.approx(error, abs=1e-9)
    assert f"next-token error {error:.4f} on " in stdout
    assert sorted(results["figures"]) == ["paths", "studies"]
