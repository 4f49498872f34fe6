import numpy as np
import pytest

from fdrmfl_pipeline.core.synthetic import generate_synthetic


def _independent_response(function, img, txt, vec):
    """y from the reference definition, written out without the package's helpers."""
    img_idx = np.arange(0, 3 * 32 * 32, 10)  # 308 terms
    txt_idx = np.arange(0, 10 * 50, 10)  # 50 terms: positions 0,10,..,40 of every token
    vec_idx = np.array([0, 10, 20, 30])
    assert len(img_idx) == 308 and len(txt_idx) == 50
    s_img = np.array([x.flatten()[img_idx].astype(np.float64).sum() for x in img])
    s_txt = np.array([x.flatten()[txt_idx].astype(np.float64).sum() for x in txt])
    s_vec = np.array([x[vec_idx].astype(np.float64).sum() for x in vec])
    s = s_img + s_txt + s_vec
    if function == "f1":
        return np.tanh(0.05 * s)
    if function == "f2":
        return np.log(1.0 + np.exp(0.1 * s + 1e-4 * s_img * s_txt))
    return 16.0 / (np.exp(0.02 * s) + np.exp(-0.02 * s))


@pytest.mark.parametrize("function", ["f1", "f2", "f3"])
def test_shapes_and_response_match_the_formula(function):
    data = generate_synthetic(function, n_train=40, n_test=10, seed=3)
    assert data.arrays["image"].shape == (50, 3, 32, 32)
    assert data.arrays["text"].shape == (50, 10, 50)
    assert data.arrays["vector"].shape == (50, 32)
    assert all(a.dtype == np.float32 for a in data.arrays.values())
    assert list(data.split).count("train") == 40 and list(data.split).count("test") == 10
    expected = _independent_response(
        function, data.arrays["image"], data.arrays["text"], data.arrays["vector"]
    )
    np.testing.assert_allclose(data.target, expected, rtol=1e-10, atol=1e-12)
    data.validate()


def test_inputs_are_standard_normal_and_seeded():
    a = generate_synthetic("f1", 300, 50, seed=7)
    b = generate_synthetic("f1", 300, 50, seed=7)
    c = generate_synthetic("f1", 300, 50, seed=8)
    np.testing.assert_array_equal(a.arrays["image"], b.arrays["image"])
    np.testing.assert_array_equal(a.target, b.target)
    assert not np.array_equal(a.target, c.target)
    img = a.arrays["image"]
    assert abs(img.mean()) < 0.01 and abs(img.std() - 1) < 0.01
    # S ~ N(0, 362) so Var(f1) is about 0.376 (reference population value)
    big = generate_synthetic("f1", 4000, 1, seed=1)
    assert 0.33 < big.target.var() < 0.42


def test_response_noise_is_optional():
    clean = generate_synthetic("f1", 200, 20, seed=1)
    noisy = generate_synthetic("f1", 200, 20, seed=1, noise_std=0.5)
    np.testing.assert_array_equal(clean.arrays["vector"], noisy.arrays["vector"])
    resid = noisy.target - clean.target
    assert 0.3 < resid.std() < 0.7
