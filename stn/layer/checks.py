"""What a :class:`stn.layer.layers.SpatialTransformer` accepts, checked before any step.

Each check raises ``ValueError`` with a message naming the argument, the
kind and what it needs, instead of a failure deep inside the sampler (a
``Reshape``, an XLA shape or ``tf.range`` error). They run once, at
construction (:func:`check_output_size`) or when the layer is built
(:func:`check_input_shape`, :func:`check_localization`), on static shapes
only: nothing is added to the steps.

A kind works on images with ``kind.ndim`` spatial axes (2 unless the kind
says otherwise), so its input has rank ``ndim + 2``: ``[B, H, W, C]``.
"""

import math
import numbers

import keras

from stn.layer import kinds


def spatial_axes(kind) -> int:
    """The number of spatial axes of the kind's images (2 for every 2-D kind)."""
    return getattr(kinds.get_kind(kind), "ndim", 2)


def check_output_size(output_size, kind) -> tuple[int, ...] | None:
    """``output_size`` as a tuple of positive ints (or None), else ValueError."""
    if output_size is None:
        return None
    axes = spatial_axes(kind)
    names = ("height", "width") if axes == 2 else tuple(f"axis {i}" for i in range(axes))
    need = (f"output_size of a SpatialTransformer of kind {kinds.get_kind(kind).name!r} must "
            f"be None or {axes} positive ints ({', '.join(names)})")
    try:
        values = tuple(output_size)
    except TypeError:
        raise ValueError(f"{need}, got {output_size!r}") from None
    if len(values) != axes:
        raise ValueError(f"{need}, got {output_size!r} ({len(values)} values)")
    for name, value in zip(names, values):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{need}, got {output_size!r}: its {name} {value!r} is not an int")
        if value < 1:
            raise ValueError(f"{need}, got {output_size!r}: its {name} {value} is not positive")
    return tuple(int(v) for v in values)


def check_input_shape(input_shape, kind) -> None:
    """Refuses an input whose rank is not the kind's (4: ``[B, H, W, C]`` for 2-D kinds)."""
    axes = spatial_axes(kind)
    rank = len(input_shape)
    if rank != axes + 2:
        layout = "[batch, height, width, channels]" if axes == 2 else \
            f"[batch, {axes} spatial axes, channels]"
        hint = (" (no channel axis: add one, e.g. images[..., None] or "
                "keras.layers.Reshape((height, width, 1)))" if rank == axes + 1 else "")
        raise ValueError(f"a SpatialTransformer of kind {kinds.get_kind(kind).name!r} takes "
                         f"{axes + 2}-D images {layout}, got shape {tuple(input_shape)} "
                         f"({rank}-D){hint}")


def check_localization(localization, input_shape, kind) -> None:
    """Refuses a localization net whose output is not the kind's parameter count per image.

    The output's shape comes from a symbolic call (no data, no step); a net
    that cannot say it is checked when the layer is first called
    (:func:`check_theta_shape`).
    """
    try:
        spec = localization.compute_output_spec(keras.KerasTensor(tuple(input_shape)))
    except Exception:  # a net Keras cannot trace symbolically: checked at call time
        return
    if isinstance(spec, keras.KerasTensor):
        check_theta_shape(spec.shape, kind, getattr(localization, "name", None))


def check_theta_shape(shape, kind, net_name: str | None = None) -> None:
    """Refuses a static localization output shape ``[B, ...]`` whose entries per image
    are not the kind's parameter count; dimensions unknown until run time pass."""
    per_image = tuple(shape)[1:]
    if any(d is None for d in per_image):
        return
    kind = kinds.get_kind(kind)
    name = f" {net_name!r}" if net_name else ""
    if kind.dense:  # a displacement field: one kind.size-vector per output pixel
        if len(per_image) == kind.ndim + 1 and per_image[-1] == kind.size:
            return
        raise ValueError(f"the localization net{name} outputs shape {tuple(shape)}, but the "
                         f"dense kind {kind.name!r} needs a field [batch, {kind.ndim} spatial "
                         f"axes, {kind.size}]: one {kind.size}-vector per output pixel "
                         f"(stn.layer.flows.flow_localization makes one)")
    width = math.prod(per_image)
    if width == kind.size:
        return
    multiple = (f"; {width} is {width // kind.size} times {kind.size}, which would be read as "
                f"{width // kind.size} times the batch" if width % kind.size == 0 and width else "")
    raise ValueError(f"the localization net{name} outputs {width} values per image (shape "
                     f"{tuple(shape)}), but the kind {kind.name!r} needs {kind.size} "
                     f"parameters per image{multiple}: end the net with a Dense({kind.size}) "
                     f"layer (stn.layers.theta_layer(kind={kind.name!r}) is one)")
