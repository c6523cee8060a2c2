"""tfnewton.capture: the hook protocol, run_with_cache and its keywords, ActivationCache."""

import pytest
import torch
from probe_models import AlgorithmOracle, NoBlocks

from tfnewton import capture, tasks
from tfnewton.constructions import gd_regression_transformer, newton_regression_transformer, newton_schulz_transformer
from tfnewton.models import KINDS, build_model

TINY = dict(n_layers=2, width=16, heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def _task(B, n, d, seed=0, dtype=torch.float64):
    return tasks.sample_linear_regression(B, n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _no_hooks_left(model):
    return all(not b._forward_hooks and not b._forward_pre_hooks for b in model.blocks)


# --------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize("kind", KINDS)
def test_trained_families_follow_the_protocol_with_n_context_positions(kind):
    model = build_model(kind, 3, n_points=6, seed=0, **TINY)
    assert model.takes_query is False and not capture.takes_query(model)
    for n in (0, 1, 5):
        assert capture.x_token_positions(model, n) == [2 * i for i in range(n)]
        # the query is the x token of point n + 1: the next x token after the context
        assert capture.query_position(model, n) == 2 * n == capture.x_token_positions(model, n + 1)[n]
    for member in ("embed", "readout", "x_token_positions", "query_position"):
        assert callable(getattr(model, member)), member


@pytest.mark.parametrize("build", [lambda: newton_regression_transformer(3, 2), lambda: gd_regression_transformer(3, 2, lr=0.5)])
def test_regression_constructions_take_a_query_after_their_n_context_tokens(build):
    model = build()
    assert model.takes_query is True and capture.takes_query(model)
    assert capture.x_token_positions(model, 7) == list(range(7))
    assert capture.query_position(model, 7) == 7
    assert isinstance(model.steps, int) and callable(model.hidden_index_of_step)
    capture.check_hooked(model)


def test_a_model_of_one_input_does_not_take_a_query():
    assert capture.takes_query(newton_schulz_transformer(3, 2)) is False


def test_a_causal_learner_without_query_position_has_its_query_at_the_next_x_token():
    oracle = AlgorithmOracle(3, layer_steps=[0, 1])
    assert not hasattr(oracle, "query_position")
    assert capture.query_position(oracle, 4) == 8


class _QueryModelWithoutSteps(torch.nn.Module):
    takes_query = True

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Identity()])

    def readout(self, H):
        return H[..., -1, 0]

    def query_position(self, n):
        return n


def test_a_model_that_takes_a_query_must_declare_its_steps():
    with pytest.raises(TypeError, match="steps"):
        capture.check_hooked(_QueryModelWithoutSteps())
    model = _QueryModelWithoutSteps()
    model.steps = 3  # an int asks for hidden_index_of_step too
    with pytest.raises(TypeError, match="hidden_index_of_step"):
        capture.check_hooked(model)
    model.steps = None
    capture.check_hooked(model)


def test_x_token_positions_of_the_wrong_length_is_refused():
    class Wrong(AlgorithmOracle):
        def x_token_positions(self, n):
            return torch.arange(n + 1) * 2

    with pytest.raises(ValueError, match="the 4 context tokens"):
        capture.x_token_positions(Wrong(3, [0]), 4)


# --------------------------------------------------------------------------- run_with_cache


@pytest.mark.parametrize("kind", KINDS)
def test_hidden_states_equal_a_manual_pass_through_the_blocks(kind):
    model = build_model(kind, 3, n_points=6, seed=0, **TINY).double()
    task = _task(4, 6, 3)
    hs = capture.hidden_states(model, task.X, task.y)
    assert hs.shape == (3, 4, 12, 16) and hs.dtype == torch.float64
    H = model.embed(task.X, task.y)
    assert torch.equal(hs[0], H)
    for i, block in enumerate(model.blocks):
        H = block(H)
        assert torch.equal(hs[i + 1], H)
    out, cache = capture.run_with_cache(model, task.X, task.y)
    assert torch.equal(out, model(task.X, task.y))
    assert list(cache) == ["embed", "blocks.0.resid_post", "blocks.1.resid_post"]
    assert torch.equal(cache["blocks.0.resid_pre"], cache["embed"])
    assert torch.equal(cache[2], cache["blocks.1.resid_post"]) and torch.equal(cache.stack(), hs)
    assert torch.equal(cache[-1], cache[2])
    with pytest.raises(KeyError, match="blocks.7"):
        cache["blocks.7.resid_post"]


def test_positions_and_names_keep_a_slice_of_the_full_cache():
    model = build_model("gpt2", 3, n_points=6, n_layers=3, width=16, heads=2, seed=0).double()
    task = _task(5, 6, 3)
    _, full = capture.run_with_cache(model, task.X, task.y)
    _, some = capture.run_with_cache(model, task.X, task.y, positions=[1, 4], names=["blocks.2.resid_post", "embed", 2])
    assert some.layer_names == ["embed", "blocks.1.resid_post", "blocks.2.resid_post"] and some.layers == [0, 2, 3]
    for name in some:
        assert torch.equal(some[name], full[name][:, [1, 4]])
    assert torch.equal(some[3], full[3][:, [1, 4]])
    with pytest.raises(KeyError, match="was not kept"):
        some[1]
    _, one = capture.run_with_cache(model, task.X, task.y, positions=4, names="blocks.0.resid_pre")
    assert one.layer_names == ["embed"] and torch.equal(one["embed"], full["embed"][:, 4])  # (B, D)
    assert one.stack().shape == (1, 5, 16)
    with pytest.raises(ValueError, match="outside the stream of 12 tokens"):
        capture.run_with_cache(model, task.X, task.y, positions=[12])
    with pytest.raises(ValueError, match="no layer named"):
        capture.run_with_cache(model, task.X, task.y, names=["blocks.3.resid_post"])
    with pytest.raises(TypeError, match="positions must be"):
        capture.run_with_cache(model, task.X, task.y, positions="query")


def test_inputs_by_position_or_by_keyword_are_the_same_call():
    model = newton_regression_transformer(3, 2)
    task = _task(4, 8, 3)
    X, y, xq = task.X[:, :7], task.y[:, :7], task.X[:, 7]
    a = capture.hidden_states(model, X, y, xq)
    b = capture.hidden_states(model, X, y=y, x_query=xq)
    c = capture.hidden_states(model, X, y, x_query=xq)
    assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(TypeError, match="y was given both"):
        capture.run_with_cache(model, X, y, y=y)
    with pytest.raises(TypeError, match="x_query was given both"):
        capture.run_with_cache(model, X, y, xq, x_query=xq)
    with pytest.raises(TypeError, match="inputs must be"):
        capture.run_with_cache(model, X, y, xq, xq)


def test_a_query_to_a_causal_learner_is_one_more_point_read_at_query_position():
    model = build_model("gpt2", 3, n_points=8, seed=0, **TINY).double()
    task = _task(4, 8, 3)
    X, y, xq = task.X[:, :7], task.y[:, :7], task.X[:, 7]
    out, cache = capture.run_with_cache(model, X, y, x_query=xq, positions=capture.query_position(model, 7))
    assert out.shape == (4, 8)
    # by causality the placeholder label is never read: the full prompt gives the same states
    full = capture.hidden_states(model, task.X, task.y)
    torch.testing.assert_close(cache.stack(), full[:, :, 14], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[:, 7], model(task.X, task.y)[:, 7], rtol=0, atol=1e-12)


def test_hidden_states_in_chunks_match_one_pass_and_leave_no_hooks():
    model = build_model("gpt2", 3, n_points=6, seed=0, **TINY)
    model.train()
    task = _task(10, 6, 3, dtype=torch.float32)
    full = capture.hidden_states(model, task.X, task.y)
    chunked = capture.hidden_states(model, task.X, task.y, batch_size=3)
    torch.testing.assert_close(full, chunked)
    assert model.training  # the flag is restored
    assert _no_hooks_left(model)


def test_hooks_are_removed_when_the_forward_pass_raises():
    model = build_model("gpt2", 3, n_points=6, seed=0, **TINY)

    def boom(module, args, out):
        raise RuntimeError("boom")

    extra = model.blocks[1].register_forward_hook(boom)
    task = _task(2, 6, 3, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="boom"):
        capture.hidden_states(model, task.X, task.y)
    extra.remove()
    assert _no_hooks_left(model)


def test_construction_hidden_states_match_its_own_and_need_a_query():
    model = newton_regression_transformer(3, 2)
    task = _task(4, 8, 3)
    X, y, xq = task.X[:, :7], task.y[:, :7], task.X[:, 7]
    hs = capture.hidden_states(model, X, y, xq)
    torch.testing.assert_close(hs, model.hidden_states(X, y, xq), rtol=0, atol=0)
    with pytest.raises(ValueError, match="x_query"):
        capture.hidden_states(model, X, y)


def test_bad_models_and_prompts_are_refused_clearly():
    task = _task(4, 6, 3)
    with pytest.raises(TypeError, match="model.blocks"):
        capture.hidden_states(NoBlocks(), task.X, task.y)
    with pytest.raises(TypeError, match="nn.Module"):
        capture.hidden_states(lambda X, y: X, task.X, task.y)
    model = build_model("gpt2", 5, n_points=6, seed=0, **TINY)
    with pytest.raises(ValueError, match="d = 3.*d = 5"):
        capture.hidden_states(model, task.X, task.y)
    with pytest.raises(ValueError, match="y must have shape"):
        capture.hidden_states(model, task.X, task.y[:, :3])
    with pytest.raises(TypeError, match="task must hold"):
        capture.task_prompts(object())
    with pytest.raises(ValueError, match="at least 2 points"):
        capture.task_prompts((task.X[:, :1], task.y[:, :1]))


def test_a_model_of_one_input_newton_schulz_is_captured_too():
    model = newton_schulz_transformer(3, 2)
    A = tasks.sample_spd(4, 3, 10.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out, cache = capture.run_with_cache(model, A)
    torch.testing.assert_close(out, model(A), rtol=0, atol=0)
    assert len(cache) == 3 and cache.stack().shape[:2] == (3, 4)
    torch.testing.assert_close(cache.stack(), model.hidden_states(A), rtol=0, atol=0)
    with pytest.raises(ValueError, match="x_query needs prompts"):
        capture.hidden_states(model, A, x_query=A[:, 0])
