"""Training: ``train_and_evaluate(config, run_dir)``.

Adam on softmax cross-entropy, the step compiled as a graph (``tf.function``;
the sampler and the optimizer's update inside it are XLA-compiled, the whole
step only with ``--xla``, which is slower on CPU: see ``bench/``), one
checkpoint per epoch, and exact
resumption: epoch ``e``'s batch order, warps and dropout masks are functions
of ``(seed, e)`` and of the checkpointed state, so a run interrupted at any
point (even by ``kill -9``) and restarted with the same command ends with
the same history as an uninterrupted run.
"""

import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stn.train import alignment as align
from stn.data import pipeline as stn_data
from stn.train import checkpoints
from stn.data import datasets
from stn.train import monitor, progress, run_lock
from stn.data import protocols
from stn.train import runs
from stn.layer.backends import require_tensorflow
from stn.train.config import Config
from stn.model import build_model, find_transformer
from stn.train.optimizers import make_optimizer, steps_per_epoch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def train_and_evaluate(config: Config, run_dir, *, mnist_path=None, cache_dir=None,
                       command: list[str] | None = None, verbose: int = 1,
                       test: bool = True) -> dict:
    """Trains ``config`` into ``run_dir`` (resuming it if it exists) and evaluates.

    The process holds the run directory's writer lock throughout
    (:mod:`stn.train.run_lock`): a second process on the same directory is
    refused while this one lives.

    Order of writes per epoch: the history row, then the checkpoint, then
    the TensorBoard logs and trace.npz (stn.train.monitor). A run killed between
    the first two resumes from the previous checkpoint and drops the extra
    row, so history and checkpoint always agree; the logs and trace are
    caught up to the checkpoint and never hold an epoch twice.

    Args:
      config: the run's Config (see stn.train.config.make_config).
      run_dir: directory of the run (see stn.train.runs for its files).
      mnist_path: optional MNIST file or folder (stn.data.mnist.load_mnist).
      cache_dir: MNIST cache directory (stn.data.mnist.load_mnist).
      command: the command line, recorded in config.json.
      verbose: 1 for progress (stn.train.progress) and a line per epoch, 0 for silence.
      test: evaluate the test split at the end. Screens, which choose on the
        validation split, pass False: the test split is then never
        evaluated, and metrics.json holds no test numbers.

    Returns:
      The final metrics, also written to ``run_dir/metrics.json``; its
      ``warnings`` list what :func:`divergence_warnings` found (also printed).

    Raises:
      stn.train.runs.RunError: run_dir holds another config or a bad checkpoint.
      stn.train.run_lock.RunBusy: another live process is training run_dir.
      TrainingDiverged: NaN or Inf loss.
    """
    require_tensorflow("stn.train.training.train_and_evaluate")  # tf.data and tf.function
    run_dir = Path(run_dir)
    runs.check_writable_dir(run_dir)  # before the lock creates the directory
    with run_lock.hold(run_dir, command):
        return _train_and_evaluate(config, run_dir, mnist_path, cache_dir, command, verbose,
                                   test)


def _train_and_evaluate(config: Config, run_dir: Path, mnist_path, cache_dir, command,
                        verbose: int, test: bool) -> dict:
    resumed = runs.init_run_dir(run_dir, config, command)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    source = datasets.source(config.dataset)  # stn.data.pipeline, or another dataset's builder
    data = source.load_data(config.protocol, config.seed, mnist_path=mnist_path,
                            cache_dir=cache_dir, max_train_examples=config.max_train_examples,
                            max_eval_examples=config.max_eval_examples)
    build_images(data, resample=config.resample_warps, test=test)
    strategy = _strategy(config.strategy)
    with strategy.scope():
        model = build_model(config.model)
        optimizer = make_optimizer(config, steps_per_epoch(config, len(data.train)))
        optimizer.build(model.trainable_variables)
    start = checkpoints.restore_checkpoint(run_dir, model, optimizer)
    history = runs.read_history(run_dir)[:start]
    if verbose and resumed:
        print(f"Resuming {run_dir} after epoch {start} of {config.epochs}.")
    # TensorBoard logs and trace.npz, caught up to the checkpoint (stn.train.monitor).
    watch = monitor.Monitor(run_dir, config, data, model, optimizer, history, verbose)
    steps = make_steps(config, model, optimizer, strategy)
    if verbose:
        print(f"{config.model.preset} on {config.protocol}: {model.count_params():,} parameters, "
              f"{config.model.dtype}, {strategy.num_replicas_in_sync} replica(s), "
              f"{len(data.train):,} training images", flush=True)
    shown = progress.Progress(config.epochs, verbose=verbose)
    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        train = train_epoch(steps, data.train, config, epoch, verbose, shown)
        val = steps.evaluate(source.eval_dataset(data.validation, config.batch_size))
        history.append({"epoch": epoch + 1, **train, "val_loss": val[0], "val_accuracy": val[1],
                        "seconds": round(time.perf_counter() - began, 3)})
        runs.write_history(run_dir, history)
        checkpoints.save_checkpoint(run_dir, model, optimizer, epoch + 1)
        watch.epoch_end(history[-1])  # after the checkpoint: logs never run ahead of it
        timing = shown.end_epoch(history[-1]["seconds"])
        if verbose:
            gap = (f" consistency {train['train_consistency_px']:.2f} px"
                   if "train_consistency_px" in train else "")
            print(f"epoch {epoch + 1}/{config.epochs}: train loss {train['train_loss']:.4f} "
                  f"acc {train['train_accuracy']:.4f}{gap} | val loss {val[0]:.4f} "
                  f"acc {val[1]:.4f} | {timing}", flush=True)

    watch.close()
    runs.save_model(run_dir, model)
    metrics = {"epochs": config.epochs,
               "val_loss": history[-1]["val_loss"], "val_accuracy": history[-1]["val_accuracy"]}
    if test:  # the keys in the order of the records in results/ (test, then time)
        loss, accuracy = steps.evaluate(source.eval_dataset(data.test, config.batch_size))
        metrics.update(test_loss=loss, test_accuracy=accuracy)
    metrics["train_seconds"] = round(sum(row["seconds"] for row in history), 1)
    metrics["warnings"] = divergence_warnings(
        history, config, config.epochs * steps_per_epoch(config, len(data.train)))
    runs.write_json(run_dir / runs.METRICS, metrics)
    if verbose:
        scored = (f"test accuracy {metrics['test_accuracy']:.4f} (error "
                  f"{100 * (1 - metrics['test_accuracy']):.2f}%)" if test
                  else f"validation accuracy {metrics['val_accuracy']:.4f} (test not evaluated)")
        print(f"{scored}, {metrics['train_seconds']:.0f} s of training; run in {run_dir}")
        for warning in metrics["warnings"]:
            print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    return metrics


def build_images(data, *, resample: bool, test: bool) -> None:
    """Builds now the fixed images the run will read, before any epoch's clock starts.

    A split's fixed images are built on first read (stn.data.pipeline). A
    run that resamples its warps never reads the train split's: they are
    never built (352 MB for 55,000 at 40 x 40).
    """
    splits = [data.validation, *([data.test] if test else []),
              *([] if resample else [data.train])]
    for split in splits:
        split.images  # noqa: B018  (the read builds them)


LOSS_GROWTH = 100.0
"""A run whose last epoch's training loss is this many times its first's has diverged."""
LOSS_BOUND = 10 * math.log(stn_data.NUM_CLASSES)
"""A mean cross-entropy above ten times that of a uniform guess over the classes
(``ln 10``, about 2.30): the model is confidently wrong, not learning."""
CHANCE_ACCURACY = 0.15
"""A final validation accuracy at or below this is chance (0.1 for 10 classes)."""
CHANCE_MIN_STEPS = 200
"""Steps a run must have made before chance accuracy is a warning (not a dry run)."""


def lower_rate_advice(config: Config) -> str:
    """What to change after a divergence: a tenth of the learning rate, in a new run dir."""
    return (f"start a new --run-dir with a lower --learning-rate, e.g. --learning-rate "
            f"{config.learning_rate / 10:g} (a tenth of this run's {config.learning_rate:g}); "
            "the same command would diverge the same way")


def divergence_warnings(history: list[dict], config: Config, total_steps: int) -> list[str]:
    """Sentences naming how a finished run went wrong, [] if it did not.

    A run has diverged when its last epoch's training (or validation) loss
    exceeds :data:`LOSS_BOUND`, or its training loss grew :data:`LOSS_GROWTH`
    times since the first epoch; it learned nothing when its final
    validation accuracy is at most :data:`CHANCE_ACCURACY` after at least
    :data:`CHANCE_MIN_STEPS` steps (``total_steps``: the run's, all epochs).
    """
    if not history:
        return []
    first, last = history[0], history[-1]
    found = []
    if max(last["train_loss"], last["val_loss"]) > LOSS_BOUND:
        found.append(f"the loss diverged: epoch {last['epoch']}'s training loss is "
                     f"{last['train_loss']:.3g} and validation loss {last['val_loss']:.3g}, "
                     f"above {LOSS_BOUND:.1f} (ten times a uniform guess's ln 10)")
    elif len(history) > 1 and last["train_loss"] > LOSS_GROWTH * first["train_loss"]:
        found.append(f"the loss diverged: the training loss grew from {first['train_loss']:.3g} "
                     f"(epoch 1) to {last['train_loss']:.3g} (epoch {last['epoch']})")
    if last["val_accuracy"] <= CHANCE_ACCURACY and total_steps >= CHANCE_MIN_STEPS:
        found.append(f"the model learned nothing: its final validation accuracy "
                     f"{last['val_accuracy']:.3f} is chance (0.1 for "
                     f"{stn_data.NUM_CLASSES} classes) after {total_steps:,} steps")
    if found:
        found[-1] += f"; {lower_rate_advice(config)}"
    return found


def _strategy(name: str) -> tf.distribute.Strategy:
    """The default (one device) strategy, or MirroredStrategy.

    Mirrored uses every GPU, or, with none, every logical CPU device (two
    logical CPUs are how the tests exercise it).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def make_steps(config: Config, model, optimizer, strategy=None) -> "Steps":
    """The training and evaluation steps of ``config`` (its loss terms and compilation)."""
    alignment = align.Alignment.of(config.alignment) if config.alignment else None
    return Steps(model, optimizer, strategy, config.jit_compile and config.strategy == "default",
                 label_smoothing=config.label_smoothing, alignment=alignment, seed=config.seed,
                 congeal_weight=config.congeal_weight)


class Steps:
    """The compiled train and eval steps of one model on one strategy.

    Args:
      model: logits model.
      optimizer: a Keras optimizer, built for ``model.trainable_variables``.
      strategy: a tf.distribute strategy (``tf.distribute.get_strategy()``
        for one device); model and optimizer must be built in its scope.
      jit_compile: compile the steps with XLA (one device only).
      label_smoothing: of the training loss's targets.
      xla_update: compile the optimizer's update alone with XLA (one device;
        the default); False keeps TensorFlow's op-by-op update (bench/).
      alignment: the label-free alignment term (stn.train.alignment), or None.
        Needs a model whose first layer is its SpatialTransformer.
      seed: of the alignment's rotations, drawn per step from
        ``(seed, optimizer.iterations)`` so a resumed run draws the same.
      congeal_weight: of the class-congealing term (stn.train.alignment.congealing);
        0: off. Needs the same transformer as ``alignment``.
    """

    def __init__(self, model, optimizer, strategy=None, jit_compile: bool = False,
                 label_smoothing: float = 0.0, xla_update: bool = True,
                 alignment: align.Alignment | None = None, seed: int = 0,
                 congeal_weight: float = 0.0):
        strategy = strategy or tf.distribute.get_strategy()
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.label_smoothing = label_smoothing
        self.alignment, self.seed, self.congeal_weight = alignment, seed, congeal_weight
        self.transformer = _input_transformer(model) if alignment or congeal_weight else None
        # The model after its transformer: with a term, the step runs the
        # transformer itself, so that one localization pass serves the
        # classification loss and the term (bench 8).
        self.head = (keras.Model(self.transformer.output, model.output)
                     if self.transformer is not None else None)
        # The image pull's factor this epoch (Alignment.pull_scale), set by train_epoch.
        self.pull_scale = tf.Variable(1.0, trainable=False, name="pull_scale")
        # autograph=False here and on the sampler's tf.functions: no step has
        # Python control flow on tensors, and converting the step and all it
        # calls cost about 4 s at every start (half a smoke run's time).
        self._train = tf.function(self._train_step, jit_compile=jit_compile, autograph=False)
        self._eval = tf.function(self._eval_step, jit_compile=jit_compile, autograph=False)
        # The optimizer's update as one XLA cluster: Adam's dozen element-wise
        # ops over each variable fuse into one pass over memory, which for
        # the default model's 26M parameters is 3x faster on CPU (bench/).
        # Mirrored strategies update through cross-replica merge calls,
        # which XLA cannot compile; they keep the plain update.
        mirrored = isinstance(strategy, tf.distribute.MirroredStrategy)
        self._apply = (tf.function(self._apply_gradients, jit_compile=True, autograph=False)
                       if xla_update and not (mirrored or jit_compile)
                       else self._apply_gradients)

    def _apply_gradients(self, gradients):
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(gradients, variables))

    def _replica_train(self, images, labels):
        # The mean over the *global* batch: each replica divides its sum by
        # the total size, and the gradients are summed across replicas.
        size = tf.distribute.get_replica_context().all_reduce(
            "sum", tf.cast(tf.shape(labels)[0], tf.float32))
        with tf.GradientTape() as tape:
            loss, losses, logits, extra = self._loss(images, labels, size)
            # Loss scaling (LossScaleOptimizer, mixed_float16); else unchanged.
            scaled = self.optimizer.scale_loss(loss)
        self._apply(tape.gradient(scaled, self.model.trainable_variables))
        return (*batch_sums(losses, logits, labels), *extra)

    def _loss(self, images, labels, size):
        """``(loss, per-example losses, logits, extra)`` of one replica's batch.

        ``extra``: ``()``, or with an alignment term the sum of its gaps.
        """
        extra = ()
        if self.transformer is None:
            logits = self.model(images, training=True)
        else:  # the same as self.model(images), its transformer's map kept
            params = self.transformer.params(images, training=True)
            outputs, _ = self.transformer.transform_and_theta(images, True, params)
            logits = self.head(outputs, training=True)
        losses = example_losses(labels, logits, self.label_smoothing)
        loss = tf.reduce_sum(losses) / size
        if self.alignment is not None:
            gaps, penalty = self._alignment_terms(images, size, params)
            loss += penalty
            extra = (tf.reduce_sum(gaps),)
        if self.congeal_weight:
            loss += self.congeal_weight * tf.reduce_sum(align.congealing(outputs, labels)) / size
        return loss, losses, logits, extra

    def _alignment_terms(self, images, size, params):
        """Per-example consistency gaps ``[b]`` and the weighted penalty (this replica's share).

        ``params``: the transformer's map of ``images`` from the forward pass.
        """
        seed = tf.stack([tf.constant(self.seed, tf.int64),
                         tf.cast(self.optimizer.iterations, tf.int64)])
        angles = align.draw_angles(tf.shape(images)[0], self.alignment.degrees, seed)
        zooms = (align.draw_zooms(tf.shape(images)[0], self.alignment.zoom, seed)
                 if self.alignment.zoom > 1.0 else None)
        t = align.terms(self.transformer, images, angles, zooms=zooms, params=params)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return t.gaps, self.alignment.penalty(t, size, replicas, self.pull_scale)

    def _train_step(self, images, labels):
        sums = self.strategy.run(self._replica_train, (images, labels))
        return [self.strategy.reduce("sum", s, axis=None) for s in sums]

    def _replica_eval(self, images, labels):
        logits = self.model(images, training=False)
        losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return batch_sums(losses, logits, labels)

    def _eval_step(self, images, labels):
        sums = self.strategy.run(self._replica_eval, (images, labels))
        return [self.strategy.reduce("sum", s, axis=None) for s in sums]

    def train(self, images, labels):
        """One step on a batch; returns (loss sum, number correct, count[, gap sum]).

        The fourth, with an alignment term: the sum of the per-example
        consistency gaps (stn.train.alignment.consistency).
        """
        return self._train(images, labels)

    def evaluate(self, dataset: tf.data.Dataset) -> tuple[float, float]:
        """Mean loss and accuracy over a dataset of (images, labels)."""
        total = np.zeros(3)
        for images, labels in self.strategy.experimental_distribute_dataset(dataset):
            total += [float(s) for s in self._eval(images, labels)]
        return total[0] / total[2], total[1] / total[2]


def example_losses(labels, logits, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy, against smoothed targets if asked."""
    if not label_smoothing:
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    targets = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    return keras.losses.categorical_crossentropy(targets, logits, from_logits=True,
                                                 label_smoothing=label_smoothing)


def _input_transformer(model):
    """The model's SpatialTransformer, which must read the model's input images."""
    layer = find_transformer(model)
    if layer is None or layer.input is not model.inputs[0]:
        raise ValueError(f"the alignment term needs a model whose first layer is its "
                         f"SpatialTransformer; {model.name!r} has "
                         f"{'none' if layer is None else 'one after other layers'}")
    return layer


def batch_sums(losses, logits, labels):
    """(sum of losses, number correct, number of examples), float32."""
    correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
    return (tf.reduce_sum(tf.cast(losses, tf.float32)),
            tf.reduce_sum(tf.cast(correct, tf.float32)),
            tf.cast(tf.size(labels), tf.float32))


def train_epoch(steps: Steps, split, config: Config, epoch: int, verbose: int,
                shown: "progress.Progress | None" = None):
    """One epoch of training; returns its history fields (mean loss, accuracy, ...).

    ``shown``: the run's progress display (stn.train.progress), or None for none.
    With an alignment term, also ``train_consistency_px``: the RMS gap of
    the consistency term (stn.train.alignment) in input pixels, a label-free
    measure of how far the transformer is from one pose per digit.
    """
    protocol = protocols.get_protocol(config.protocol).scaled(
        stn_data.warp_strength(epoch, config.warp_ramp_epochs))
    dataset = datasets.source(config.dataset).train_dataset(
        split, config.batch_size, seed=config.seed, epoch=epoch, resample=config.resample_warps,
        protocol=protocol)
    n_steps = steps_per_epoch(config, len(split))
    dataset = dataset.take(n_steps)
    if steps.alignment:
        steps.pull_scale.assign(steps.alignment.pull_scale(epoch, config.epochs))
    if shown is not None:
        shown.start_epoch(epoch, n_steps)
    total = np.zeros(4 if steps.alignment else 3)
    for step, (images, labels) in enumerate(steps.strategy.experimental_distribute_dataset(dataset)):
        sums = [float(s) for s in steps.train(images, labels)]
        if not np.isfinite(sums[0]):
            kept = f"the checkpoint of epoch {epoch} is kept" if epoch else "no checkpoint yet"
            raise TrainingDiverged(
                f"loss is {sums[0]} at epoch {epoch + 1}, step {step + 1}: training stopped "
                f"({kept}). To train this model, {lower_rate_advice(config)}.")
        total += sums
        if shown is not None:
            shown.step(step + 1, sums[2], total[0] / total[2], total[1] / total[2])
    row = {"train_loss": total[0] / total[2], "train_accuracy": total[1] / total[2]}
    if steps.alignment:
        row["train_consistency_px"] = float(np.sqrt(total[3] / total[2])
                                            * config.model.input_size / 2)
    return row
