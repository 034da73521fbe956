"""DLTR_MLP: a multilayer perceptron over deep features fused with the selected clinical factors.

Standardisation is fitted on the training rows only. Regularisation: dropout, decoupled weight
decay (AdamW), and early stopping chosen *within cross-validation on the training split*: each
of ``n_folds`` stratified folds trains with a validation-loss patience rule and records its best
epoch; the final network trains on all training rows for the median best epoch. With ``tune``
(default) the width and weight decay are chosen the same way: each point of ``grid`` is scored by
its mean fold validation AUC (inner CV on training rows only) and the best is refitted
(``best_params_``, ``cv_table_``). A grid point without hidden layers (``hidden=()``, ``LINEAR_GRID``) is a linear
model; its one layer starts at zero, so that its early stopping shrinks the coefficients towards zero (gradient
descent from zero follows a path close to ridge regression's) rather than towards a random initial direction. ``epochs`` (with ``tune=False``) skips the early-stopping CV and
trains for that many epochs: how the out-of-fold refits of a fitted head reuse its choices. ``n_members``
final networks (the chosen width, weight decay and epoch count; seeds ``seed``, ``seed + 1000``, ...) are
averaged on the logit scale: a seed ensemble, which removes the variance of one initialisation and one
dropout/shuffle sequence without another search (1 = a single network, as before).

With ``ordinal`` the network learns from an ordered outcome instead of a binary one: ``y`` holds grade positions
(mRECIST: 0 PD, 1 SD, 2 PR, 3 CR, ``dltr.core.vocabulary.MRECIST_GRADES``) and the loss is the cumulative-logit
(proportional-odds) likelihood, ``P(grade >= j) = sigmoid(logit - a_j)``, with the cut at ``event_from`` fixed at 0,
so the network's output stays the logit of ``P(grade >= event_from)`` (objective response) and prediction, scores and
the saved weights read as for a binary network; the other cuts are learnt (initialised at the training rows'
marginal grade frequencies, no weight decay) and saved as ``cuts_``. Grades that no training row has are dropped
from the ladder. A binary label dichotomises the grades and throws away the CR/PR and SD/PD distinctions that the
same patients carry (Harrell, Regression Modeling Strategies, 2nd ed., ch. 13-15); the inner CV still selects on
the binary AUC. Mini-batch
Adam over a shuffled index (no per-sample Python loop), with at least ``min_steps`` steps per epoch:
a 154-patient training split in one 256-row batch took one step per epoch, and early stopping ended
it after three steps (training AUC 0.665, below the linear DLTR head's 0.847). CPU runs are
deterministic (a forked, seeded torch RNG, the global RNG left untouched; a fixed thread count).
"""

from __future__ import annotations

import numpy as np

from dltr.core.exceptions import ModelError

from ._linear import _check_x, _check_xy, limited_threads
from ._registry import estimator_from_state, estimator_state, head_state_class

__all__ = ["AdamW", "DLTRMLP", "LINEAR_GRID", "MEMBER_SEED_STEP"]

#: grid points of a network without a hidden layer (a linear model) that the inner CV may choose beside the default
#: widths (``HeadsConfig.mlp_linear``)
LINEAR_GRID = (((), 1e-2), ((), 1e-1))

#: seed offset between the members of a seed ensemble (``DLTRMLP.n_members``); far from the inner-CV folds' seeds
MEMBER_SEED_STEP = 1000


def _build(d_in: int, hidden: tuple[int, ...], dropout: float):
    import torch.nn as nn

    layers, d = [], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
        d = h
    out = nn.Linear(d, 1)
    if not hidden:  # a linear model starts from zero, so that early stopping shrinks it towards zero (the ridge path
        nn.init.zeros_(out.weight)  # of gradient descent), not towards a random direction
        nn.init.zeros_(out.bias)
    layers.append(out)
    return nn.Sequential(*layers)


def _check_grades(X, y, event_from: int) -> tuple[np.ndarray, np.ndarray]:
    """X as float64 and ``y`` as integer grade positions, with grades on both sides of ``event_from``."""
    X, y = _check_x(X, y, "DLTRMLP", "grades")
    if y.size == 0 or not np.all(np.isfinite(y.astype(np.float64))) or np.any(y.astype(np.float64) % 1 != 0) \
            or y.min() < 0:
        raise ModelError(f"DLTRMLP.fit (ordinal): y must hold grade positions 0, 1, 2, ... (mRECIST: 0 PD, 1 SD, "
                         f"2 PR, 3 CR), got {np.unique(y)[:8].tolist()}")
    g = y.astype(np.int64)
    if not ((g < event_from).any() and (g >= event_from).any()):
        raise ModelError(f"DLTRMLP.fit (ordinal): y must hold grades below and from event_from={event_from}, got "
                         f"{np.unique(g).tolist()}")
    return X, g


def _cuts(gaps, event_index: int):
    """The cuts ``a_1 < ... < a_{K-1}`` of a K-grade ladder (logit scale) from their log-gaps, the cut between the
    grades below ``event_index`` and the rest fixed at 0: ``P(grade >= j) = sigmoid(logit - a_j)``."""
    import torch
    import torch.nn.functional as F

    step = F.softplus(gaps)
    below, above = step[:event_index - 1], step[event_index - 1:]
    lower = -torch.flip(torch.cumsum(torch.flip(below, [0]), 0), [0])
    return torch.cat([lower, torch.zeros(1), torch.cumsum(above, 0)])


def _initial_gaps(rank, n_grades: int, event_index: int):
    """Log-gaps whose cuts are the marginal (intercept-only) cumulative logits of the training grades, relative to
    the event cut, as a leaf tensor to learn."""
    import torch

    r = rank.numpy()
    q = np.array([(r >= j).mean() for j in range(1, n_grades)]).clip(0.5 / r.size, 1 - 0.5 / r.size)
    a = -np.log(q / (1 - q))
    gap = np.diff(a).clip(1e-3, None)                        # cumulative shares fall, so a rises
    return torch.tensor(np.log(np.expm1(gap)), dtype=torch.float32, requires_grad=True)


def _ordinal_nll(z, rank, cuts):
    """Mean negative log-likelihood of grade positions ``rank`` under the cumulative-logit model."""
    import torch

    n = z.shape[0]
    c = torch.cat([torch.ones(n, 1), torch.sigmoid(z[:, None] - cuts[None, :]), torch.zeros(n, 1)], dim=1)
    p = c.gather(1, rank[:, None]) - c.gather(1, rank[:, None] + 1)
    return -torch.log(p.clamp_min(1e-7)).mean()


class AdamW:
    """``torch.optim.AdamW`` (defaults: betas 0.9 / 0.999, eps 1e-8, no amsgrad), the same element-wise operations in
    the same order, so its parameters equal ``torch.optim.AdamW(foreach=True)``'s bit for bit on CPU (a test checks).

    Why not ``torch.optim``: its first step imports ``torch._dynamo`` (4-9 s in a fresh process, every
    ``dltr train-heads`` and scorer), and its step wrapper costs more than the update itself on a head this small
    (0.6 of 1.9 ms a step in a profile of DLTR_MLP's inner-CV grid)."""

    def __init__(self, params, *, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        import torch

        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), betas, float(eps)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        beta1, beta2 = self.betas
        self.steps += 1
        # torch's non-capturable update: bias corrections as Python floats of the step count
        step_size = (self.lr / (1 - beta1 ** float(self.steps))) * -1
        bc2_sqrt = (1 - beta2 ** float(self.steps)) ** 0.5
        with torch.no_grad():
            for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
                g = p.grad
                if self.weight_decay != 0:
                    p.mul_(1 - self.lr * self.weight_decay)
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = v.sqrt().div_(bc2_sqrt).add_(self.eps)
                p.addcdiv_(m, denom, value=step_size)


class DLTRMLP:
    """MLP classifier (torch) with the scikit-learn estimator contract."""

    def __init__(self, *, hidden: tuple[int, ...] = (64,), dropout: float = 0.3, weight_decay: float = 1e-2,
                 lr: float = 1e-3, batch_size: int = 256, min_steps: int = 8, max_epochs: int = 100,
                 patience: int = 6, n_folds: int = 3, n_threads: int = 1, seed: int = 0, tune: bool = True,
                 epochs: int | None = None, n_members: int = 1, ordinal: bool = False, event_from: int = 2,
                 grid: tuple[tuple[tuple[int, ...], float], ...] = (((16,), 1e-2), ((16,), 1e-1), ((64,), 1e-2),
                                                                   ((64,), 1e-1))):
        self.hidden = hidden
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.batch_size = batch_size
        self.min_steps = min_steps
        self.max_epochs = max_epochs
        self.patience = patience
        self.n_folds = n_folds
        self.n_threads = n_threads
        self.seed = seed
        self.tune = tune
        self.epochs = epochs
        self.n_members = n_members
        self.ordinal = ordinal
        self.event_from = event_from
        self.grid = grid

    def _train(self, Xt, yt, Xv, yv, epochs: int, seed: int, hidden=None, weight_decay=None):
        """Train one network; returns (network, best_epoch, val losses, cuts): an ordinal network's learnt cuts (logit
        scale), None for a binary one."""
        import torch
        import torch.nn.functional as F

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            net = _build(Xt.shape[1], tuple(self.hidden if hidden is None else hidden), self.dropout)
            wd = self.weight_decay if weight_decay is None else weight_decay
            opt = AdamW(net.parameters(), lr=self.lr, weight_decay=wd)
            if self.ordinal:
                gaps = _initial_gaps(yt, self.n_grades_, self.event_index_)
                opt_cuts = AdamW([gaps], lr=self.lr, weight_decay=0.0)

                def loss_fn(z, target):
                    return _ordinal_nll(z, target, _cuts(gaps, self.event_index_))
            else:
                opt_cuts, loss_fn = None, F.binary_cross_entropy_with_logits
            n, best, best_epoch, bad, losses = Xt.shape[0], np.inf, epochs, 0, []
            bs = max(1, min(self.batch_size, -(-n // max(1, self.min_steps))))
            for epoch in range(1, epochs + 1):
                net.train()
                perm = torch.randperm(n, generator=gen)
                for i in range(0, n, bs):
                    idx = perm[i:i + bs]
                    loss = loss_fn(net(Xt[idx]).squeeze(1), yt[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if opt_cuts is not None:
                        opt_cuts.step()
                        opt_cuts.zero_grad()
                if Xv is None:
                    continue
                net.eval()
                with torch.no_grad():
                    vl = float(loss_fn(net(Xv).squeeze(1), yv))
                losses.append(vl)
                if vl < best - 1e-6:
                    best, best_epoch, bad = vl, epoch, 0
                else:
                    bad += 1
                    if bad >= self.patience:
                        break
            net.eval()
            cuts = _cuts(gaps, self.event_index_).detach().numpy().astype(np.float64) if self.ordinal else None
            return net, best_epoch, losses, cuts

    @property
    def n_grades_(self) -> int:
        """Grades on an ordinal network's ladder (``grades_``: those some training row had)."""
        return int(self.grades_.size)

    @property
    def event_index_(self) -> int:
        """Position on the ladder of the event's first grade (``event_from``)."""
        return int((self.grades_ < self.event_from).sum())

    def fit(self, X, y) -> DLTRMLP:
        with limited_threads(self.n_threads):
            return self._fit(X, y)

    def _fit(self, X, y) -> DLTRMLP:
        import torch
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold

        if isinstance(self.n_members, bool) or not isinstance(self.n_members, int) or self.n_members < 1:
            raise ModelError(f"DLTRMLP n_members {self.n_members!r}: a number of networks >= 1 expected")
        if self.ordinal:
            X, grades = _check_grades(X, y, self.event_from)
            self.grades_ = np.unique(grades)                       # the ladder: grades some training row has
            rank = np.searchsorted(self.grades_, grades)
            y = (grades >= self.event_from).astype(np.int64)      # the binary event: folds and inner-CV AUC
            t = torch.from_numpy(rank.astype(np.int64))
        else:
            X, y = _check_xy(X, y, "DLTRMLP")
            t = torch.from_numpy(y.astype(np.float32))
        self.mean_ = X.mean(0)
        sd = X.std(0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        Z = torch.from_numpy(((X - self.mean_) / self.scale_).astype(np.float32))
        n_folds = int(min(self.n_folds, np.bincount(y).min()))
        points = [(tuple(h), float(w)) for h, w in self.grid] if self.tune else [(tuple(self.hidden),
                                                                                  float(self.weight_decay))]
        table = []
        for hidden, wd in points:
            epochs, aucs = [], []
            if n_folds >= 2 and (self.tune or self.epochs is None):
                skf = StratifiedKFold(n_folds, shuffle=True, random_state=self.seed)
                for k, (tr, va) in enumerate(skf.split(np.zeros(len(y)), y)):
                    tr_i, va_i = torch.from_numpy(tr), torch.from_numpy(va)
                    net, be, _, _ = self._train(Z[tr_i], t[tr_i], Z[va_i], t[va_i], self.max_epochs,
                                             self.seed + 1 + k, hidden, wd)
                    epochs.append(be)
                    with torch.no_grad():
                        aucs.append(float(roc_auc_score(y[va], net(Z[va_i]).squeeze(1).numpy())))
            table.append({"hidden": list(hidden), "weight_decay": wd, "cv_auc": float(np.mean(aucs)) if aucs
                          else float("nan"), "epochs": epochs})
        best = max(range(len(table)), key=lambda i: (np.nan_to_num(table[i]["cv_auc"], nan=-1.0), -i))
        self.cv_table_ = table
        self.best_params_ = {"hidden": tuple(points[best][0]), "weight_decay": points[best][1]}
        epochs = table[best]["epochs"]
        self.cv_epochs_ = epochs
        self.cv_auc_ = table[best]["cv_auc"]
        self.n_epochs_ = (int(np.median(epochs)) if epochs else
                          int(self.epochs) if self.epochs is not None else self.max_epochs)
        states, cuts = [], []
        for m in range(self.n_members):
            net, _, _, member_cuts = self._train(Z, t, None, None, max(1, self.n_epochs_),
                                                 self.seed + MEMBER_SEED_STEP * m, *points[best])
            states.append({k: v.detach().numpy().copy() for k, v in net.state_dict().items()})
            cuts.append(member_cuts)
        self.state_, self.member_states_ = states[0], states[1:]
        if self.ordinal:
            self.cuts_ = np.mean(cuts, axis=0)       # the members' cuts (logit scale), a record: prediction needs none
        self.n_features_in_ = X.shape[1]
        self._nets = None
        return self

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_nets"] = None                      # the torch modules are rebuilt from state_ and member_states_
        return d

    def _modules(self) -> list:
        import torch

        if getattr(self, "_nets", None) is None:
            nets = []
            for state in [self.state_, *self.member_states_]:
                net = _build(self.n_features_in_, tuple(self.best_params_["hidden"]), self.dropout)
                net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
                nets.append(net.eval())
            self._nets = nets
        return self._nets

    def decision_function(self, X) -> np.ndarray:
        import torch

        if not hasattr(self, "state_"):
            raise ModelError("DLTRMLP is not fitted; call fit(X, y) first")
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ModelError(f"DLTRMLP: X has shape {X.shape}, expected (n, {self.n_features_in_})")
        Z = torch.from_numpy(((X - self.mean_) / self.scale_).astype(np.float32))
        with limited_threads(self.n_threads), torch.no_grad():
            # the mean of one logit vector is that vector bit for bit: n_members=1 scores as a single network
            return np.mean([net(Z).squeeze(1).double().numpy() for net in self._modules()], axis=0)

    def predict_proba(self, X) -> np.ndarray:
        p1 = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p1, p1])

    def get_state(self) -> dict:
        """Hyper-parameters and standardisation as JSON, the network's weights as arrays (safetensors)."""
        return estimator_state(self, mean_=self.mean_.tolist(), scale_=self.scale_.tolist(),
                               cv_epochs_=list(self.cv_epochs_), cv_auc_=self.cv_auc_, n_epochs_=self.n_epochs_,
                               n_features_in_=self.n_features_in_, state_=dict(self.state_),
                               member_states_=[dict(s) for s in self.member_states_],
                               best_params_={"hidden": list(self.best_params_["hidden"]),
                                             "weight_decay": self.best_params_["weight_decay"]},
                               cv_table_=list(self.cv_table_),
                               **({"grades_": self.grades_.tolist(), "cuts_": self.cuts_.tolist()} if self.ordinal
                                  else {}))

    @classmethod
    def from_state(cls, state: dict) -> DLTRMLP:
        head = estimator_from_state(cls, state, tuples=("hidden",))
        head.grid = tuple((tuple(int(u) for u in h), float(w)) for h, w in head.grid)
        head.mean_, head.scale_ = np.asarray(state["mean_"], np.float64), np.asarray(state["scale_"], np.float64)
        head.cv_epochs_, head.cv_auc_ = list(state["cv_epochs_"]), float(state["cv_auc_"])
        head.n_epochs_, head.n_features_in_ = int(state["n_epochs_"]), int(state["n_features_in_"])
        head.state_ = {k: np.asarray(v) for k, v in state["state_"].items()}
        head.member_states_ = [{k: np.asarray(v) for k, v in s.items()} for s in state.get("member_states_", [])]
        bp = state["best_params_"]
        head.best_params_ = {"hidden": tuple(int(h) for h in bp["hidden"]), "weight_decay": float(bp["weight_decay"])}
        head.cv_table_ = list(state["cv_table_"])
        if head.ordinal:
            head.grades_, head.cuts_ = np.asarray(state["grades_"], np.int64), np.asarray(state["cuts_"], np.float64)
        head._nets = None
        return head


head_state_class(DLTRMLP)
