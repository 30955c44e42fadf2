"""Refinement statistics against set intersections and np.corrcoef over the full activations."""

import keras
import numpy as np
import pytest
from keras import layers

from keras_residual import Residual, lesion_ready
from keras_residual.probe import probe
from keras_residual.viz.refinement import LayerComparison, compare_layers, shared_topk
from keras_residual.viz.top_activations import TopK

pytestmark = pytest.mark.multibackend


def topk(indices):
    indices = np.asarray(indices)
    return TopK(np.ones(indices.shape), indices, np.zeros(indices.shape + (0,), np.int64))


def test_shared_topk_counts_set_intersections():
    rng = np.random.default_rng(0)
    a = topk([rng.choice(30, 9, replace=False) for _ in range(5)])
    b = topk([rng.choice(30, 9, replace=False) for _ in range(7)])
    want = [[len(set(rb) & set(ra)) for ra in a.indices] for rb in b.indices]
    np.testing.assert_array_equal(shared_topk(a, b), want)


def stage_model():
    """stem, then three same-shape blocks (a stage) and a projection block to 6 channels."""
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    for name in ("res2a", "res2b", "res2c"):
        x = Residual(layers.Conv2D(4, 3, padding="same"), activation="relu", name=name)(x)
    x = Residual(layers.Conv2D(6, 3, strides=2, padding="same"), shortcut="projection",
                 activation="relu", name="res3a")(x)
    return keras.Model(inputs, x)


def test_compare_layers_against_full_activations():
    model = stage_model()
    images = np.random.default_rng(1).normal(size=(40, 6, 6, 2)).astype("float32")
    paths = ["res2a", "res2b", "res2c", "res3a"]
    result = compare_layers(model, paths, images, k=5, batch_size=16, progress=False)
    full = probe(model, paths).predict(images, verbose=0)
    maxima = {p: f.reshape(40, -1, f.shape[-1]).max(axis=1) for p, f in zip(paths, full, strict=True)}
    top_sets = {
        p: [set(np.lexsort((np.arange(40), -m[:, c]))[:5]) for c in range(m.shape[1])]
        for p, m in maxima.items()
    }
    assert [(c.path_a, c.path_b) for c in result.comparisons] == list(zip(paths[:-1], paths[1:], strict=True))
    for comparison in result.comparisons:
        a, b = comparison.path_a, comparison.path_b
        shared = [[len(sb & sa) for sa in top_sets[a]] for sb in top_sets[b]]
        np.testing.assert_array_equal(comparison.shared, shared)
        corr = np.corrcoef(maxima[b].T, maxima[a].T)[: maxima[b].shape[1], maxima[b].shape[1]:]
        np.testing.assert_allclose(comparison.correlation, corr, atol=1e-6)
    same = result.comparisons[0]
    np.testing.assert_array_equal(
        same.same_channel_overlap(), [len(top_sets["res2b"][c] & top_sets["res2a"][c]) for c in range(4)]
    )
    with pytest.raises(ValueError, match="correspondences"):
        result.comparisons[2].same_channel_overlap()  # 4 -> 6 channels: no identity


def test_deleted_branch_means_identical_channels():
    """With res2b's branch deleted, res2b = res2a exactly: overlap k and correlation 1."""
    model = stage_model()
    images = np.random.default_rng(2).normal(size=(30, 6, 6, 2)).astype("float32")
    with lesion_ready(model):
        model.get_layer("res2b").branch_enabled = False
        result = compare_layers(model, ["res2a", "res2b"], images, k=4, progress=False)
    comparison = result.comparisons[0]
    live = np.isfinite(comparison.same_channel_correlation())
    assert live.any()
    np.testing.assert_array_equal(comparison.same_channel_overlap(), [4] * 4)
    np.testing.assert_allclose(comparison.same_channel_correlation()[live], 1.0, atol=1e-6)


def test_constant_channel_has_nan_correlation():
    inputs = keras.Input((4, 4, 1))
    x = layers.Conv2D(2, 3, name="a")(inputs)
    y = layers.Conv2D(2, 1, name="b")(x)
    model = keras.Model(inputs, y)
    model.get_layer("b").set_weights([np.zeros((1, 1, 2, 2), "float32"), np.array([1.0, 2.0], "float32")])
    images = np.random.default_rng(3).normal(size=(10, 4, 4, 1)).astype("float32")
    corr = compare_layers(model, ["a", "b"], images, k=2, progress=False).comparisons[0].correlation
    assert np.isnan(corr).all()


def test_correspondences_and_matched_fraction():
    shared = np.array([[1, 3, 3, 0], [0, 1, 0, 1], [2, 0, 0, 2]])
    correlation = np.array([[0.1, 0.2, 0.5, 0.0], [0.0, 0.3, np.nan, 0.9], [0.4, 0.0, 0.0, 0.4]])
    comparison = LayerComparison("res4f", "res5a", 9, shared, correlation)
    best = comparison.correspondences(top=2)
    # Most shared images first; ties by higher correlation, then lower channel index.
    assert best.channels.tolist() == [[2, 1], [3, 1], [0, 3]]
    assert best.shared.tolist() == [[3, 3], [1, 1], [2, 2]]
    assert comparison.matched_fraction(min_shared=2) == pytest.approx(2 / 3)


def test_chance_baselines_match_enumerated_random_sets():
    import itertools

    from keras_residual.viz.refinement import LayerComparison

    n, k = 6, 2
    subsets = [set(c) for c in itertools.combinations(range(n), k)]
    overlaps = [len(a & b) for a in subsets for b in subsets]
    one = LayerComparison("a", "b", k, np.zeros((1, 1), int), np.eye(1), images=n)
    assert one.chance_overlap() == pytest.approx(np.mean(overlaps)) == pytest.approx(4 / 6)
    # A channel of b matches when one of 2 independent random channels of a shares >= 1.
    two = LayerComparison("a", "b", k, np.zeros((1, 2), int), np.ones((1, 2)), images=n)
    hits = [max(len(a1 & b), len(a2 & b)) >= 1
            for a1 in subsets for a2 in subsets for b in subsets]
    assert two.chance_matched_fraction(1) == pytest.approx(np.mean(hits))
    summary = two.summary(1)
    assert summary["same_channel_overlap"] is None and summary["images"] == n
    with pytest.raises(ValueError, match="images"):
        LayerComparison("a", "b", 9, np.zeros((1, 1), int), np.eye(1)).chance_overlap()


def test_label_purity_against_hand_counts_and_enumerated_chance():
    import itertools

    from keras_residual.viz.refinement import chance_label_purity, label_purity

    labels = np.array([0, 0, 0, 1, 1, 2])
    top = TopK(np.ones((3, 3)), np.array([[0, 1, 2], [0, 3, 5], [3, 4, 0]]),
               np.zeros((3, 3, 0), int))
    np.testing.assert_allclose(label_purity(top, labels), [1.0, 1 / 3, 2 / 3])
    exact = np.mean([max(np.bincount(labels[list(c)])) / 3
                     for c in itertools.combinations(range(6), 3)])
    assert chance_label_purity(labels, k=3, draws=4000) == pytest.approx(exact, abs=0.02)


def _numpy_top_k(model: keras.Model, path: str, images: np.ndarray, k: int) -> np.ndarray:
    """Each channel's top-k images by its spatial maximum, ranked by NumPy: (C, k) sets."""
    features = keras.Model(model.inputs, model.get_layer(path).output).predict(images, verbose=0)
    maxima = features.max(axis=(1, 2))  # (N, C)
    return np.argsort(-maxima, axis=0, kind="stable")[:k].T


def test_compare_layers_purity_and_twins_against_numpy_top_k_sets():
    from keras_residual.viz.refinement import compare_twins, stage_label_purity

    def stack(seed):
        inputs = keras.Input((4, 4, 2))
        x = Residual(layers.Conv2D(2, 3, padding="same"), name="b1")(inputs)
        x = Residual(layers.Conv2D(2, 3, padding="same"), name="b2")(x)
        model = keras.Model(inputs, x)
        rng = np.random.default_rng(seed)
        model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
        return model

    images = np.random.default_rng(1).random((20, 4, 4, 2), dtype="float32")
    labels = np.random.default_rng(2).integers(0, 3, 20)
    residual, other = stack(3), stack(4)
    results = [compare_layers(m, ["b1", "b2"], images, k=3, progress=False, batch_size=7)
               for m in (residual, other)]
    comparison = results[0].comparisons[0]
    assert comparison.images == 20 and comparison.chance_overlap() == pytest.approx(9 / 20)

    expected_purity, expected_matched = {}, []
    for model in (residual, other):
        top = {p: _numpy_top_k(model, p, images, 3) for p in ("b1", "b2")}
        if model is residual:
            expected_purity = {p: np.mean([np.bincount(labels[t]).max() / 3 for t in top[p]])
                               for p in top}
        shared = np.array([[len(set(b) & set(a)) for a in top["b1"]] for b in top["b2"]])
        if model is residual:
            np.testing.assert_array_equal(comparison.shared, shared)
        expected_matched.append(float(np.mean(shared.max(axis=1) >= 2)))

    purity = stage_label_purity(results[0], labels)
    assert purity["b1"] == pytest.approx(expected_purity["b1"])
    assert purity["b2"] == pytest.approx(expected_purity["b2"])
    twins = compare_twins(*results)
    assert [twins[k][0]["matched_fraction"] for k in ("residual", "plain")] == expected_matched


def test_empirical_nulls_against_numpy_on_a_hand_made_activation_table():
    """Two 'layers' that output a hand-made (12 images, 4 channels) table each; NumPy and set
    arithmetic give the within-layer null and the exact permutation null (all 24 permutations)."""
    import itertools

    from keras_residual.viz.refinement import compare_layers

    # Image 0 is a hub (high in every channel of both layers); channel c of b follows channel c
    # of a with noise, so the same-channel overlap is high but not k.
    table_a = np.array([
        [9.0, 9.1, 9.2, 9.3], [8.0, 0.1, 0.2, 1.0], [7.0, 0.3, 6.0, 0.4], [0.5, 8.5, 0.6, 0.7],
        [0.8, 7.5, 0.9, 5.0], [1.1, 1.2, 8.2, 1.3], [1.4, 1.5, 7.2, 1.6], [1.7, 1.8, 1.9, 8.8],
        [2.0, 6.5, 2.1, 7.8], [6.1, 2.2, 2.3, 2.4], [2.5, 2.6, 2.7, 2.8], [2.9, 3.0, 3.1, 3.2],
    ], "float32")
    noise = np.random.default_rng(4).uniform(-3.0, 3.0, table_a.shape).astype("float32")
    table_b = table_a + noise
    images = np.concatenate([table_a, table_b], axis=1)[:, None, None, :]  # (12, 1, 1, 8)

    inputs = keras.Input((1, 1, 8))
    a = layers.Dense(4, use_bias=False, name="a")(inputs)
    b = layers.Dense(4, use_bias=False, name="b")(inputs)
    model = keras.Model(inputs, [a, b])
    select = np.eye(8, dtype="float32")
    model.get_layer("a").set_weights([select[:, :4]])
    model.get_layer("b").set_weights([select[:, 4:]])
    k = 3
    comparison = compare_layers(model, ["a", "b"], images, k=k, progress=False,
                                batch_size=5).comparisons[0]

    top_a = [set(np.argsort(-table_a[:, c])[:k]) for c in range(4)]
    top_b = [set(np.argsort(-table_b[:, c])[:k]) for c in range(4)]
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    within = {(i, j): len(top_b[i] & top_b[j]) for i, j in pairs}
    assert comparison.null_overlap() == pytest.approx(np.mean(list(within.values())))
    matched = [max(within[i, j] for j in range(4) if j != i) >= 2 for i in range(4)]
    assert comparison.null_matched_fraction(2) == pytest.approx(np.mean(matched))
    # The hub image makes the empirical chance overlap exceed the closed form k^2/N = 0.75.
    assert comparison.null_overlap() > comparison.chance_overlap() == pytest.approx(9 / 12)

    observed = np.mean([len(top_b[c] & top_a[c]) for c in range(4)])
    stats = [np.mean([len(top_b[c] & top_a[p[c]]) for c in range(4)])
             for p in itertools.permutations(range(4))]
    null = comparison.permutation_null(draws=4000, seed=1)
    assert null["observed"] == pytest.approx(observed)
    assert null["mean"] == pytest.approx(np.mean(stats))
    assert null["std"] == pytest.approx(np.std(stats), abs=0.05)
    assert null["p_value"] == pytest.approx(np.mean(np.array(stats) >= observed), abs=0.03)
    summary = comparison.summary(2)
    assert summary["null_overlap"] == comparison.null_overlap()
    assert summary["permutation_p"] == comparison.permutation_null()["p_value"]
    assert summary["null_matched_fraction"] == comparison.null_matched_fraction(2)
    with pytest.raises(ValueError, match="empirical nulls"):
        LayerComparison("a", "b", 3, np.zeros((2, 2), int), np.eye(2), images=12).null_overlap()
