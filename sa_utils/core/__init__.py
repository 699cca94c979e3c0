"""The method: one Selective Amnesia routine and what it is made of.

* :mod:`.amnesia`    -- :func:`~.amnesia.selective_amnesia`, the SA loop (surrogate loss + replay loss + EWC)
* :mod:`.fisher`     -- the diagonal Fisher information of theta* (one accumulator for every model)
* :mod:`.ewc`        -- the EWC penalty lambda * sum_i F_i (theta_i - theta*_i)^2
* :mod:`.sources`    -- every batch source (step -> batch), with named seed streams
* :mod:`.replay`     -- the frozen copy of theta* and sampling from it
* :mod:`.surrogates` -- the distributions the forgotten concept is mapped to

Everything here is model-agnostic: a model enters through an adapter (:mod:`sa_utils.adapters`).
"""
