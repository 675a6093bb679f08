"""The volume and dense-field kinds, registered in :data:`stn.kinds.KINDS`.

=========== ====== ==== ========================================================
kind        params ndim parameters (output -> input coordinates)
=========== ====== ==== ========================================================
affine3d    12     3    ``[3, 4]`` row-major (:mod:`stn.sampler3d`)
flow        2/px   2    a displacement per output pixel, ``[B, h, w, 2]`` (:mod:`stn.flows`)
flow3d      3/vox  3    a displacement per output voxel, ``[B, d, h, w, 3]``
=========== ====== ==== ========================================================

``import stn`` (which any ``import stn.<module>`` runs first) imports this
module, so the names resolve wherever the registry is read, and a
``.keras`` file holding a 3-D transformer loads.

The 3-D kinds sample with the ``keras.ops`` trilinear sampler
(``Kind.sample``) on every backend, TensorFlow included:
:func:`stn.kinds.keras_warp` sends them to :func:`stn.kinds.warp_ops`, not
to the 2-D XLA function, whose shape-relaxed retracing would hand the
sampler unknown sizes. On TensorFlow they are compiled with the step
(``model.fit`` compiles it with XLA); the layer's ``jit_compile`` does not
apply to them. Their ``tf_sample`` is the same code, for
:func:`stn.kinds.warp` on the TensorFlow backend. The 2-D flow uses the 2-D
grid + bilinear sampler of the other kinds, in ``keras.ops`` and in TF.
"""

from stn import flows
from stn import sampler3d as S3
from stn.kinds import KINDS, Kind

VOLUME_KINDS = {
    "affine3d": Kind("affine3d", 12, S3.AFFINE3D_IDENTITY, S3.affine3d_grid, S3.affine3d_points,
                     S3.affine3d_grid, S3.affine3d_warp, ndim=3, sample=S3.affine3d_warp,
                     description="12 parameters: a 3-D affine map of a volume"),
    "flow": Kind("flow", 2, (0.0, 0.0), flows.flow_grid, flows.flow_points, flows.tf_flow_grid,
                 dense=True, description="a displacement per output pixel (dense flow)"),
    "flow3d": Kind("flow3d", 3, (0.0, 0.0, 0.0), flows.flow3d_grid, flows.flow_points,
                   flows.flow3d_grid, flows.flow3d_warp, ndim=3, sample=flows.flow3d_warp,
                   dense=True, description="a displacement per output voxel (dense 3-D flow)"),
}
KINDS.update(VOLUME_KINDS)
