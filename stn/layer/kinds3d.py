"""The volume and dense-field kinds, registered in :data:`stn.layer.kinds.KINDS`.

=========== ====== ==== ========================================================
kind        params ndim parameters (output -> input coordinates)
=========== ====== ==== ========================================================
affine3d    12     3    ``[3, 4]`` row-major (:mod:`stn.layer.sampler3d`)
flow        2/px   2    a displacement per output pixel, ``[B, h, w, 2]`` (stn.layer.flows)
flow3d      3/vox  3    a displacement per output voxel, ``[B, d, h, w, 3]``
=========== ====== ==== ========================================================

``import stn`` (which any ``import stn.<module>`` runs first) imports this
module, so the names resolve wherever the registry is read, and a
``.keras`` file holding a 3-D transformer loads.

The 3-D kinds sample with the ``keras.ops`` trilinear sampler
(``Kind.sample``) on every backend. On TensorFlow, :func:`stn.kinds.keras_warp`
calls their ``tf_sample`` (:func:`tf_volume_sample`): the same code, as its
own XLA cluster by default (the layer's ``jit_compile``), one trace per
shape. Not the 2-D path's XLA function: its shape-relaxed retracing would
hand the sampler unknown sizes. Measured (``python -m bench volumes``): TF's
Conv3D is many times slower under XLA on CPU than in its own kernels, so the
sampler is compiled alone rather than with the step. The 2-D flow uses the
2-D grid + bilinear sampler of the other kinds, in ``keras.ops`` and in TF.
"""

from typing import Callable

from stn.layer import flows
from stn.layer import sampler3d as S3
from stn.layer.kinds import KINDS, Kind


def tf_volume_sample(warp: Callable) -> Callable:
    """``warp(volumes, params, out_size)`` for TensorFlow, as ``Kind.tf_sample``.

    The returned ``(volumes, params, out_size=None, image_gradient=True,
    jit_compile=False)`` runs ``warp`` as is, or under XLA with
    ``jit_compile`` (one ``tf.function`` per ``image_gradient``, built on
    first use). ``image_gradient=False`` stops the volumes' gradient
    *inside* the compiled function: a compiled function's backward pass
    computes the gradient of every input, and for volumes that need none
    that is a scatter-add as large as the batch.
    """
    compiled = {}

    def sample(volumes, params, out_size=None, image_gradient=True, jit_compile=False):
        import tensorflow as tf
        if not jit_compile:
            return warp(volumes if image_gradient else tf.stop_gradient(volumes), params, out_size)
        if image_gradient not in compiled:
            def body(volumes, params, out_size):
                return warp(volumes if image_gradient else tf.stop_gradient(volumes), params,
                            out_size)
            compiled[image_gradient] = tf.function(body, jit_compile=True, autograph=False)
        size = None if out_size is None else tuple(int(s) for s in out_size)
        return compiled[image_gradient](volumes, params, size)

    return sample


VOLUME_KINDS = {
    "affine3d": Kind("affine3d", 12, S3.AFFINE3D_IDENTITY, S3.affine3d_grid, S3.affine3d_points,
                     S3.affine3d_grid, tf_volume_sample(S3.affine3d_warp), ndim=3,
                     sample=S3.affine3d_warp,
                     description="12 parameters: a 3-D affine map of a volume"),
    "flow": Kind("flow", 2, (0.0, 0.0), flows.flow_grid, flows.flow_points, flows.tf_flow_grid,
                 dense=True, description="a displacement per output pixel (dense flow)"),
    "flow3d": Kind("flow3d", 3, (0.0, 0.0, 0.0), flows.flow3d_grid, flows.flow_points,
                   flows.flow3d_grid, tf_volume_sample(flows.flow3d_warp), ndim=3,
                   sample=flows.flow3d_warp,
                   dense=True, description="a displacement per output voxel (dense 3-D flow)"),
}
KINDS.update(VOLUME_KINDS)


def image_kinds() -> tuple[str, ...]:
    """Names of the kinds of ``[B, H, W, C]`` images with ``[B, P]`` parameters.

    The registry's kinds that are neither 3-D nor dense: the ones a 2-D
    model preset, the 2-D tests and the 2-D benchmarks iterate over.
    """
    return tuple(name for name, kind in KINDS.items() if kind.ndim == 2 and not kind.dense)

