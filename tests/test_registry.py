"""The algorithm registry of tfnewton.algorithms: names, own parameters, fitted methods."""

import pytest
import torch

from tfnewton import algorithms, tasks
from tfnewton.algorithms import ALGORITHMS, REQUIRED, Algorithm, as_algorithm, iterates, prefix_predictions, register_algorithm
from tfnewton.constructions import newton_regression_transformer

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(B, n, d, seed=0):
    return tasks.sample_linear_regression(B, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture
def scratch_registry():
    """Names registered by a test are removed afterwards."""
    before = dict(ALGORITHMS)
    yield
    ALGORITHMS.clear()
    ALGORITHMS.update(before)


def test_batch_one_names_are_registered_with_what_they_solve():
    for name in ("newton", "gd", "cg", "lbfgs", "bfgs", "online_gd", "ols"):
        entry = ALGORITHMS[name]
        assert isinstance(entry, Algorithm) and entry.name == name and entry.task == "linear_regression"
        assert not entry.needs_fit
    assert ALGORITHMS["online_gd"].online and not ALGORITHMS["newton"].online
    assert ALGORITHMS["ista"].task == "sparse_recovery" and ALGORITHMS["ista"].parameters["lam"] is REQUIRED


def test_iterates_and_prefix_predictions_against_the_algorithms():
    task = _task(5, 7, 3)
    W = iterates("newton", task.X, task.y, 4)
    torch.testing.assert_close(W, algorithms.newton_least_squares(task.X, task.y, 4), rtol=0, atol=0)
    P = prefix_predictions("gd", task.X, task.y, 3, lr=0.5)
    assert P.shape == (4, 5, 7) and bool((P[:, :, 0] == 0).all())
    for i in (1, 4, 6):
        w = algorithms.gradient_descent_least_squares(task.X[:, :i], task.y[:, :i], 3, lr=0.5)
        torch.testing.assert_close(P[:, :, i], (w * task.X[:, i]).sum(-1), rtol=1e-12, atol=1e-12)
    online = prefix_predictions("online_gd", task.X, task.y, 0)
    w = algorithms.online_gradient_descent(task.X, task.y)
    torch.testing.assert_close(online[0, :, 3], (w[3] * task.X[:, 3]).sum(-1))
    ols = iterates("ols", task.X, task.y, 2)
    torch.testing.assert_close(ols[2], algorithms.least_squares(task.X, task.y))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        iterates("adam", task.X, task.y, 2)


def test_own_parameters_are_declared_defaulted_and_checked():
    task = _task(4, 10, 3)
    lasso = iterates("ista", task.X, task.y, 5, lam=0.1)
    torch.testing.assert_close(lasso, algorithms.ista(task.X, task.y, 0.1, 5), rtol=0, atol=0)
    with pytest.raises(ValueError, match="ista needs lam"):
        iterates("ista", task.X, task.y, 5)
    with pytest.raises(ValueError, match="gd takes lr; got alpha"):
        iterates("gd", task.X, task.y, 5, alpha=0.1)
    with pytest.raises(ValueError, match="cg takes no parameters; got lr"):
        iterates("cg", task.X, task.y, 5, lr=0.1)
    assert ALGORITHMS["newton"].resolve_parameters(ridge=0.5) == {"alpha": None, "ridge": 0.5}
    with pytest.raises(TypeError):
        ALGORITHMS["newton"].parameters["alpha"] = 1.0  # read-only


def test_register_an_algorithm_with_a_required_parameter(scratch_registry):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 12, 2, generator=g, dtype=torch.float64)
    y = torch.where(torch.randn(3, 12, generator=g) > 0, 1.0, -1.0).double()

    def damped_newton(X, y, steps, mu):
        return algorithms.damped_newton_logistic(X, y, mu, steps)

    entry = register_algorithm("damped_newton_test", damped_newton, task="logistic_regression",
                               parameters={"mu": REQUIRED}, description="damped Newton")
    assert ALGORITHMS["damped_newton_test"] is entry and as_algorithm("damped_newton_test") is entry
    torch.testing.assert_close(iterates("damped_newton_test", X, y, 3, mu=0.1),
                               algorithms.damped_newton_logistic(X, y, 0.1, 3), rtol=0, atol=0)
    with pytest.raises(ValueError, match="registered already"):
        register_algorithm("damped_newton_test", damped_newton)
    replaced = register_algorithm("damped_newton_test", damped_newton, parameters={"mu": 0.5}, replace=True,
                                  task="logistic_regression")
    assert ALGORITHMS["damped_newton_test"] is replaced and replaced.resolve_parameters() == {"mu": 0.5}
    with pytest.raises(ValueError, match="task must be one of"):
        register_algorithm("other", damped_newton, task="classification")


class _TinyLearned(torch.nn.Module):
    """A learned method in miniature: fit scales a GD step size; every layer is one GD step."""

    def __init__(self, layers=3):
        super().__init__()
        self.layers = layers
        self.lr = None

    def fit(self, lr):
        self.lr = lr
        return self

    def iterates(self, X, y):
        return algorithms.gradient_descent_least_squares(X, y, self.layers, lr=self.lr)


def test_a_fitted_algorithm_is_built_fitted_then_passed_as_the_module(scratch_registry):
    entry = register_algorithm("tiny_learned", _TinyLearned, parameters={"layers": 3}, needs_fit=True)
    task = _task(4, 9, 3)
    with pytest.raises(TypeError, match="must be fitted before it runs"):
        iterates("tiny_learned", task.X, task.y, 2)
    module = entry.build(layers=4).fit(0.5)
    W = iterates(module, task.X, task.y, 2)
    torch.testing.assert_close(W, algorithms.gradient_descent_least_squares(task.X, task.y, 2, lr=0.5), rtol=0, atol=0)
    with pytest.raises(ValueError, match="has 4 layers"):
        iterates(module, task.X, task.y, 5)
    with pytest.raises(TypeError, match="is not fitted"):
        ALGORITHMS["gd"].build()


def test_a_construction_serves_as_a_fitted_algorithm():
    task = _task(4, 9, 3)
    model = newton_regression_transformer(3, 4)
    torch.testing.assert_close(iterates(model, task.X, task.y, 4), algorithms.newton_least_squares(task.X, task.y, 4),
                               rtol=1e-9, atol=1e-12)
    assert as_algorithm(model).name == "NewtonRegressionTransformer"
