"""The optimizer of a training recipe: Adam or AdamW on its learning-rate schedule.

``make_optimizer(config, steps_per_epoch)`` builds it from a Config's
recipe fields (stn.train.config); the localization net may take scaled steps
(``localization_lr_scale``), and ``mixed_float16`` adds dynamic loss scaling.
"""

import keras

from stn.train.config import Config


def steps_per_epoch(config: Config, n_train: int) -> int:
    """Training steps in one epoch of ``n_train`` images (the last batch may be partial)."""
    steps = -(-n_train // config.batch_size)
    return min(steps, config.max_steps_per_epoch or steps)


def learning_rate(config: Config, steps_per_epoch: int):
    """The recipe's learning rate: a float, or a schedule of the step count.

    ``"cosine"``: linear warm-up from 0 to ``config.learning_rate`` over
    ``warmup_epochs``, then cosine decay to 0 at the end of the last epoch.
    The schedule reads the optimizer's step counter, which the checkpoint
    holds, so a resumed run continues on the same curve.
    """
    if config.schedule == "constant":
        return config.learning_rate
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else config.learning_rate, decay_steps=max(total - warmup, 1),
        alpha=0.0, warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup)


def make_optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam (AdamW if ``weight_decay``) on the recipe's learning-rate schedule.

    Under ``mixed_float16`` it is wrapped in a LossScaleOptimizer (dynamic
    loss scaling), without which small float16 gradients underflow to 0.
    """
    rate = learning_rate(config, steps_per_epoch)
    common = dict(learning_rate=rate, beta_1=config.beta_1, beta_2=config.beta_2,
                  epsilon=config.epsilon)
    base = keras.optimizers.AdamW if config.weight_decay else keras.optimizers.Adam
    if config.weight_decay:
        common["weight_decay"] = config.weight_decay
    optimizer = localization_scaled(base, config.localization_lr_scale, **common)
    if config.model.dtype == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


LOCALIZATION_PATH = "/localization/"  # in the variable paths of every transformer's net


def localization_scaled(base: type, scale: float, **kwargs) -> keras.optimizers.Optimizer:
    """``base(**kwargs)`` (Adam or AdamW) whose localization nets step at ``scale`` times the
    rate (plain ``base`` when ``scale`` is 1)."""
    return base(**kwargs) if scale == 1.0 else _scaled_optimizer(base)(scale, **kwargs)


def _scaled_optimizer(base: type) -> type:
    """``base`` (Adam or AdamW) with the localization net's steps scaled.

    The instance takes ``localization_lr_scale`` first: the variables whose
    path contains :data:`LOCALIZATION_PATH` (``transformer/localization/...``)
    take Adam steps at that multiple of the learning rate, the rest at the
    rate. AdamW's decoupled weight decay is not scaled.
    """

    class LocalizationScaled(base):
        def __init__(self, localization_lr_scale: float, **kwargs):
            super().__init__(**kwargs)
            self.localization_lr_scale = localization_lr_scale

        def build(self, variables):
            super().build(variables)
            # update_step may receive the backend's variable, not the Keras
            # one (which has the path): tell them apart by the optimizer's key.
            self._localization = {self._var_key(v) for v in variables
                                  if LOCALIZATION_PATH in v.path}

        def update_step(self, gradient, variable, learning_rate):
            if self._var_key(variable) in self._localization:
                learning_rate = learning_rate * self.localization_lr_scale
            return super().update_step(gradient, variable, learning_rate)

    LocalizationScaled.__name__ = f"LocalizationScaled{base.__name__}"
    return LocalizationScaled


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate the optimizer's next step will use."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    rate = inner.learning_rate
    return float(rate(inner.iterations) if callable(rate) else rate)
