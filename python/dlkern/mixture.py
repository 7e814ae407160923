"""``GaussianMixture``: scikit-learn's estimator of the same name, its EM
steps on dlkern's kernels (``gmm_estep``, ``gmm_mstep``).

Every constructor parameter, default, fitted attribute and method of
scikit-learn's ``GaussianMixture`` (1.9), plus ``sample``; the initialisations
``kmeans`` (dlkern's own, its distances through ``dk.matmul``, seeded by
k-means++), ``k-means++``, ``random`` and ``random_from_data`` draw from the
random state as scikit-learn does. scikit-learn is not needed: when it is
installed the estimator is one of its estimators (``BaseEstimator``,
``DensityMixin``, its ``ConvergenceWarning`` and ``NotFittedError``) and
passes its ``check_estimator``. EM runs where the data lives: NumPy data
on the CPU kernels, CuPy data on the CUDA kernels (every step of an
iteration, the factorisation of the precisions included, on the GPU; the
one value read back per iteration is the lower bound), and Dask arrays on
their workers (``_dask``: each EM iteration chunk by chunk). The fitted
attributes are arrays of the data's kind.
"""

from __future__ import annotations

import math
import numbers
import warnings
from time import time

import numpy as np

from . import _dask, _kmeans
from ._kmeans import array_module, to_host
from .gmm import (gmm_estep, gmm_mstep, gmm_precisions_cholesky, precision_error,
                  precisions_cholesky, precisions_shape)

try:  # scikit-learn is optional: its base classes when present
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import DensityMixin as _Density
    from sklearn.exceptions import ConvergenceWarning, NotFittedError
except ImportError:  # pragma: no cover - exercised by the packaging test
    _Density = object

    class _Base:
        """get_params/set_params as scikit-learn's BaseEstimator defines them."""

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in _PARAMS}

        def set_params(self, **params):
            for name, value in params.items():
                if name not in _PARAMS:
                    raise ValueError(f"Invalid parameter {name!r} for estimator {self!r}.")
                setattr(self, name, value)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class ConvergenceWarning(UserWarning):
        """EM stopped at max_iter before its lower bound converged."""

    class NotFittedError(ValueError, AttributeError):
        """A method that needs a fitted model was called before fit."""


_PARAMS = ("n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init",
           "init_params", "weights_init", "means_init", "precisions_init", "random_state",
           "warm_start", "verbose", "verbose_interval")
_TYPES = ("full", "tied", "diag", "spherical")
_INITS = ("kmeans", "k-means++", "random", "random_from_data")


def _random_state(seed) -> np.random.RandomState:
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"The '{name}' parameter of GaussianMixture must be an int in the "
                         f"range [{low}, inf). Got {value!r} instead.")


def _check_real(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"The '{name}' parameter of GaussianMixture must be a float in the "
                         f"range [0.0, inf). Got {value!r} instead.")


def _as_float_array(x, name, ensure_2d=True, allow_nd=False, dtypes=(np.float64, np.float32)):
    """``x`` as a float64 or float32 NumPy or CuPy array (CuPy stays CuPy),
    checked as scikit-learn's check_array checks it (messages included)."""
    if hasattr(x, "tocsr") or hasattr(x, "toarray"):
        raise TypeError(f"GaussianMixture does not support sparse input ({name}); pass a "
                        "dense array")
    xp = array_module(x)
    if xp is np and (hasattr(x, "__cuda_array_interface__") or
                     "cuda" in str(getattr(x, "device", ""))):
        raise TypeError(f"GaussianMixture takes GPU data ({name}) as CuPy arrays; got "
                        f"{type(x).__module__}.{type(x).__name__} (cupy.asarray shares it)")
    if hasattr(x, "detach"):  # a torch tensor on the CPU
        x = x.detach().numpy()
    arr = xp.asarray(x)
    if xp.iscomplexobj(arr):
        raise ValueError("Complex data not supported\n{}\n".format(arr))
    if arr.dtype not in dtypes:
        arr = arr.astype(dtypes[0])  # NumPy's TypeError/ValueError for what is not a number
    if ensure_2d and arr.ndim != 2:
        if arr.ndim < 2:
            raise ValueError(
                f"Expected 2D array, got {'scalar' if arr.ndim == 0 else '1D'} array instead:"
                f"\narray={arr}.\nReshape your data either using array.reshape(-1, 1) if "
                "your data has a single feature or array.reshape(1, -1) if it contains a "
                "single sample.")
        if not allow_nd:
            raise ValueError(f"Found array with dim {arr.ndim}. GaussianMixture expected <= 2.")
    if not bool(xp.isfinite(arr).all()):
        what = "NaN" if bool(xp.isnan(arr).any()) else "infinity or a value too large for " \
            f"{arr.dtype!r}"
        raise ValueError(f"Input {name} contains {what}.")
    return arr


def _check_fit_shape(shape):
    """What scikit-learn's fit requires of X's shape: a feature, two samples."""
    if shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={shape}) while a minimum of 1 "
                         "is required by GaussianMixture.")
    if shape[0] < 2:
        raise ValueError(f"Found array with {shape[0]} sample(s) (shape={shape}) while a "
                         "minimum of 2 is required by GaussianMixture.")


def _check_shape(a, shape, name):
    if a.shape != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got "
                         f"{a.shape}")


def _flip(a):
    return a[..., ::-1, ::-1]


class GaussianMixture(_Density, _Base):
    """scikit-learn's ``GaussianMixture`` (see the module docstring): same
    parameters and defaults, fitted attributes ``weights_``, ``means_``,
    ``covariances_``, ``precisions_``, ``precisions_cholesky_``,
    ``converged_``, ``n_iter_``, ``lower_bound_``, ``lower_bounds_``,
    ``n_features_in_``; methods ``fit``, ``fit_predict``, ``predict``,
    ``predict_proba``, ``score_samples``, ``score``, ``bic``, ``aic``,
    ``sample``."""

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", weights_init=None,
                 means_init=None, precisions_init=None, random_state=None, warm_start=False,
                 verbose=0, verbose_interval=10):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    # ------------------------------------------------------------ checking

    def _check_parameters(self):
        _check_int(self.n_components, "n_components", 1)
        _check_real(self.tol, "tol")
        _check_real(self.reg_covar, "reg_covar")
        _check_int(self.max_iter, "max_iter", 0)
        _check_int(self.n_init, "n_init", 1)
        _check_int(self.verbose_interval, "verbose_interval", 1)
        if self.covariance_type not in _TYPES:
            raise ValueError("The 'covariance_type' parameter of GaussianMixture must be a "
                             f"str among {set(_TYPES)}. Got {self.covariance_type!r} instead.")
        if self.init_params not in _INITS:
            raise ValueError("The 'init_params' parameter of GaussianMixture must be a str "
                             f"among {set(_INITS)}. Got {self.init_params!r} instead.")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise ValueError("The 'warm_start' parameter of GaussianMixture must be an "
                             f"instance of 'bool'. Got {self.warm_start!r} instead.")
        if isinstance(self.verbose, bool) or not isinstance(self.verbose, numbers.Integral):
            raise ValueError("The 'verbose' parameter of GaussianMixture must be an int. Got "
                             f"{self.verbose!r} instead.")

    def _check_inits(self, D):
        """The user's initial parameters, checked as scikit-learn checks them."""
        K, c = self.n_components, self.covariance_type
        weights = means = precisions = None
        if self.weights_init is not None:
            weights = to_host(_as_float_array(self.weights_init, "weights", ensure_2d=False))
            _check_shape(weights, (K,), "weights")
            if (weights < 0).any() or (weights > 1).any():
                raise ValueError("The parameter 'weights' should be in the range [0, 1], but "
                                 f"got max value {weights.min():.5f}, min value "
                                 f"{weights.max():.5f}")
            atol = 1e-6 if weights.dtype == np.float32 else 1e-8
            if not abs(1.0 - float(weights.sum())) <= atol:
                raise ValueError("The parameter 'weights' should be normalized, but got "
                                 f"sum(weights) = {weights.sum():.5f}")
        if self.means_init is not None:
            means = to_host(_as_float_array(self.means_init, "means", ensure_2d=False))
            _check_shape(means, (K, D), "means")
        if self.precisions_init is not None:
            precisions = to_host(_as_float_array(self.precisions_init, "precisions",
                                                 ensure_2d=False, allow_nd=True))
            _check_shape(precisions, precisions_shape(c, K, D), f"{c} precision")
            if c in ("full", "tied"):
                for p in precisions.reshape(-1, D, D):
                    if not (np.allclose(p, p.T) and (np.linalg.eigvalsh(p) > 0).all()):
                        raise ValueError(f"'{c} precision' should be symmetric, "
                                         "positive-definite")
            elif (precisions <= 0).any():
                raise ValueError(f"'{c} precision' should be positive")
        return weights, means, precisions

    def _validate(self, X, reset):
        X = _as_float_array(X, "X")
        if reset:
            _check_fit_shape(X.shape)
            self.n_features_in_ = X.shape[1]
        else:
            self._check_inference_shape(X.shape)
        return X

    def _check_inference_shape(self, shape):
        """What scikit-learn's predict requires of X's shape: a sample, and the
        features fit saw."""
        if shape[0] < 1:
            raise ValueError(f"Found array with 0 sample(s) (shape={shape}) while a minimum "
                             "of 1 is required by GaussianMixture.")
        if shape[1] != self.n_features_in_:
            raise ValueError(f"X has {shape[1]} features, but GaussianMixture is expecting "
                             f"{self.n_features_in_} features as input.")

    def _check_is_fitted(self):
        if not hasattr(self, "precisions_cholesky_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")

    # ---------------------------------------------------------------- EM

    def _estep(self, X):
        """(log_resp, log_prob_norm) of the current parameters, in the dtype NumPy
        would promote X's and the parameters' to (as scikit-learn computes)."""
        xp = array_module(X)
        dt = np.result_type(X.dtype, self.means_.dtype)
        return gmm_estep(X.astype(dt, copy=False),
                         *(xp.asarray(a, dtype=dt) for a in (self.weights_, self.means_,
                                                             self.precisions_cholesky_)),
                         self.covariance_type)

    def _mstep(self, X, resp, normalise):
        xp = array_module(X)
        nk, means, cov = gmm_mstep(X, xp.ascontiguousarray(resp, dtype=X.dtype),
                                   self.reg_covar, self.covariance_type)
        return nk / normalise(nk), means, cov

    def _factorise(self):
        """precisions_cholesky_ of covariances_, without waiting for a GPU; a
        failure shows as a NaN lower bound at the next E-step and is checked
        then (_check_factorised), or at the end of fit."""
        self.precisions_cholesky_, self._failed = precisions_cholesky(self.covariances_,
                                                                      self.covariance_type)

    def _check_factorised(self):
        failed, self._failed = getattr(self, "_failed", None), None
        if failed is not None and bool(failed.any()):
            raise ValueError(precision_error(self.covariances_.dtype))

    def _initialize(self, X, random_state, inits):
        weights_init, means_init, precisions_init = inits
        if _dask.is_dask(X):
            if all(i is not None for i in inits):  # nothing left to estimate from the data
                weights = means = cov = None
            else:
                weights, means, cov = _dask.initial_resp_parameters(X, self, random_state)
            self._set_initial(weights, means, cov, inits, np)
            return
        xp = array_module(X)
        n, K = X.shape[0], self.n_components
        resp = xp.zeros((n, K), dtype=X.dtype)
        if self.init_params == "kmeans":
            resp[xp.arange(n), _kmeans.kmeans_labels(X, K, random_state)] = 1
        elif self.init_params == "random":
            resp = xp.asarray(random_state.uniform(size=(n, K)), dtype=X.dtype)
            resp /= resp.sum(axis=1)[:, None]
        elif self.init_params == "random_from_data":
            rows = random_state.choice(n, size=K, replace=False)
            resp[xp.asarray(rows), xp.arange(K)] = 1
        else:
            _, indices = _kmeans.kmeans_plusplus(X, K, random_state)
            resp[xp.asarray(indices), xp.arange(K)] = 1
        self._set_initial(*self._mstep(X, resp, lambda nk: n), inits, xp)

    def _set_initial(self, weights, means, cov, inits, xp):
        """The initial parameters, arrays of xp: the user's where given, else
        those of the initial responsibilities."""
        weights_init, means_init, precisions_init = inits
        self.weights_ = weights if weights_init is None else xp.asarray(weights_init)
        self.means_ = means if means_init is None else xp.asarray(means_init)
        if precisions_init is None:
            self.covariances_ = cov
            self.precisions_cholesky_ = gmm_precisions_cholesky(cov, self.covariance_type)
        elif self.covariance_type in ("full", "tied"):
            # The upper factor U of precision = U U^T: Cholesky of the flipped matrix, flipped.
            factor = _flip(np.linalg.cholesky(_flip(precisions_init)))
            self.precisions_cholesky_ = xp.asarray(np.ascontiguousarray(factor))
        else:
            self.precisions_cholesky_ = xp.asarray(np.sqrt(precisions_init))

    def fit(self, X, y=None):
        """Fit the model with EM, ``n_init`` times, keeping the best lower bound."""
        self.fit_predict(X, y)
        return self

    def fit_predict(self, X, y=None):
        """Fit as :meth:`fit`, then the labels of X under the fitted model."""
        self._check_parameters()
        if _dask.is_dask(X):
            X = _dask.check(X, _check_fit_shape)
            self.n_features_in_ = X.shape[1]
        else:
            X = self._validate(X, reset=True)
        if X.shape[0] < self.n_components:
            raise ValueError("Expected n_samples >= n_components but got n_components = "
                             f"{self.n_components}, n_samples = {X.shape[0]}")
        inits = self._check_inits(X.shape[1])
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        n_init = self.n_init if do_init else 1
        max_lower_bound = -np.inf
        best_lower_bounds = []
        self.converged_ = False
        random_state = _random_state(self.random_state)
        for init in range(n_init):
            self._verbose_init_begin(init)
            if do_init:
                self._initialize(X, random_state, inits)
            lower_bound = -np.inf if do_init else self.lower_bound_
            current = []
            if self.max_iter == 0:
                best_params, best_n_iter = self._parameters(), 0
                continue
            converged = False
            for n_iter in range(1, self.max_iter + 1):
                previous = lower_bound
                lower_bound, (self.weights_, self.means_, self.covariances_) = self._em_step(X)
                self._factorise()
                current.append(lower_bound)
                change = lower_bound - previous
                self._verbose_iter_end(n_iter, change)
                if abs(change) < self.tol:
                    converged = True
                    break
            self._check_factorised()
            self._verbose_init_end(lower_bound, converged)
            if lower_bound > max_lower_bound or max_lower_bound == -np.inf:
                max_lower_bound = lower_bound
                best_params, best_n_iter = self._parameters(), n_iter
                best_lower_bounds = current
                self.converged_ = converged
        if not self.converged_ and self.max_iter > 0:
            warnings.warn("Best performing initialization did not converge. Try different init "
                          "parameters, or increase max_iter, tol, or check for degenerate "
                          "data.", ConvergenceWarning)
        self._set_parameters(best_params)
        self.n_iter_ = best_n_iter
        self.lower_bound_ = max_lower_bound
        self.lower_bounds_ = best_lower_bounds
        if _dask.is_dask(X):
            return _dask.labels_and_scores(X, self, "labels")
        return self._estep(X)[0].argmax(axis=1)

    def _em_step(self, X):
        """(the mean log-likelihood under the current parameters, the M-step's
        (weights, means, covariances))."""
        if _dask.is_dask(X):
            return _dask.em_step(X, self)
        xp = array_module(X)
        log_resp, norm = self._estep(X)
        lower_bound = float(xp.mean(norm))  # the one value read back per iteration
        if not math.isfinite(lower_bound):
            self._check_factorised()
        return lower_bound, self._mstep(X, xp.exp(log_resp), xp.sum)

    def _parameters(self):
        return (self.weights_, self.means_, getattr(self, "covariances_", None),
                self.precisions_cholesky_)

    def _set_parameters(self, params):
        self.weights_, self.means_, covariances, self.precisions_cholesky_ = params
        if covariances is not None:
            self.covariances_ = covariances
        pc = self.precisions_cholesky_
        if self.covariance_type in ("full", "tied"):
            self.precisions_ = pc @ pc.swapaxes(-1, -2)
        else:
            self.precisions_ = pc**2

    # ----------------------------------------------------------- inference

    def _infer(self, X, what):
        """'labels', 'proba' or 'score' of X's samples: NumPy for in-memory
        data, a lazy Dask array for a Dask array."""
        self._check_is_fitted()
        if _dask.is_dask(X):
            X = _dask.check(X, self._check_inference_shape)
            return _dask.labels_and_scores(X, self, what)
        log_resp, norm = self._estep(self._validate(X, reset=False))
        if what == "labels":
            return log_resp.argmax(axis=1)
        return array_module(log_resp).exp(log_resp) if what == "proba" else norm

    def score_samples(self, X):
        """The log-likelihood of each sample under the model, (n_samples,)."""
        return self._infer(X, "score")

    def score(self, X, y=None):
        """The mean log-likelihood of the samples."""
        return float(self.score_samples(X).mean())

    def predict(self, X):
        """The most probable component of each sample."""
        return self._infer(X, "labels")

    def predict_proba(self, X):
        """Each component's responsibility for each sample, (n_samples, n_components)."""
        return self._infer(X, "proba")

    def _n_parameters(self):
        K, D = self.means_.shape
        cov = {"full": K * D * (D + 1) / 2.0, "diag": K * D, "tied": D * (D + 1) / 2.0,
               "spherical": K}[self.covariance_type]
        return int(cov + D * K + K - 1)

    def bic(self, X):
        """Bayesian information criterion of the model on X (lower is better)."""
        n = np.shape(X)[0]
        return -2 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X):
        """Akaike information criterion of the model on X (lower is better)."""
        return -2 * self.score(X) * np.shape(X)[0] + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """``(X (n_samples, n_features), y)``: samples drawn from the fitted
        mixture and their components, as scikit-learn draws them."""
        self._check_is_fitted()
        if n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples} . The sampling "
                             "requires at least one sample.")
        # Drawn on the host from the random state, as scikit-learn draws;
        # returned as arrays of the fitted attributes' kind.
        xp = array_module(self.means_)
        weights, means, covariances = map(to_host, (self.weights_, self.means_,
                                                    self.covariances_))
        D = means.shape[1]
        rng = _random_state(self.random_state)
        counts = rng.multinomial(n_samples, weights)
        c = self.covariance_type
        if c == "full":
            X = np.vstack([rng.multivariate_normal(m, cov, int(n))
                           for m, cov, n in zip(means, covariances, counts)])
        elif c == "tied":
            X = np.vstack([rng.multivariate_normal(m, covariances, int(n))
                           for m, n in zip(means, counts)])
        else:
            X = np.vstack([m + rng.standard_normal(size=(n, D)) * np.sqrt(cov)
                           for m, cov, n in zip(means, covariances, counts)])
        y = np.concatenate([np.full(n, j, dtype=np.int64) for j, n in enumerate(counts)])
        return xp.asarray(X), xp.asarray(y)

    # ------------------------------------------------------------ verbose

    def _verbose_init_begin(self, n_init):
        if self.verbose >= 1:
            print(f"Initialization {n_init}")
        if self.verbose >= 2:
            self._init_prev_time = self._iter_prev_time = time()

    def _verbose_iter_end(self, n_iter, change):
        if n_iter % self.verbose_interval:
            return
        if self.verbose == 1:
            print(f"  Iteration {n_iter}")
        elif self.verbose >= 2:
            now = time()
            print(f"  Iteration {n_iter}\t time lapse {now - self._iter_prev_time:.5f}s\t ll "
                  f"change {change:.5f}")
            self._iter_prev_time = now

    def _verbose_init_end(self, lower_bound, converged):
        message = "converged" if converged else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {message}.")
        elif self.verbose >= 2:
            print(f"Initialization {message}. time lapse {time() - self._init_prev_time:.5f}s"
                  f"\t lower bound {lower_bound:.5f}.")
