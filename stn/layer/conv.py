"""The input gradient of a 2-D convolution by matrix products (TensorFlow).

The layer that uses it is :class:`stn.layers.Conv2D`, the classifier's first
convolution in every ST model.

A spatial transformer needs the gradient of the loss with respect to the
classifier's *input* (it has to reach the sampler, paper Sec. 3.4); a plain
CNN never computes it. For the first layer of an MNIST classifier (one input
channel) TensorFlow computes that gradient with oneDNN's backward-data
convolution, whose vector lanes run over the *input* channels: one channel
uses one lane in 16 (AVX-512, float32), so a 9x9 layer's input gradient
costs several times the layer's forward pass (measured by ``make bench``, section 7).

Here the same gradient is a few matrix products, where oneDNN's kernels
are efficient whatever the channel count. With ``x`` the input, ``W [K_h,
K_w, C, F]`` the kernel, ``s`` the stride and ``(p_t, p_l)`` the top/left zero
padding, the forward convolution is

    y[b, p, q, f] = sum_{u, v, c} x[b, s p + u - p_t, s q + v - p_l, c] W[u, v, c, f]

and the input gradient, with ``g`` the upstream gradient dilated by ``s``
(``g[b, s p, s q] = dy[b, p, q]``, zeros between), is

    dx[b, i, j, c] = sum_{P, Q, f} g[b, P, Q, f] W[i - P + p_t, j - Q + p_l, c, f].

Two ways to order that sum (:func:`input_gradient`):

- ``"gemm"``: one product over ``f`` gives each upstream pixel's patch of
  ``K_h K_w C`` values, which are then added into the image (overlap-add)
  along columns, then rows, each as a product with a 0/1 matrix
  (:func:`overlap_matrix`). Least arithmetic; writes ``K_h K_w`` values per
  upstream pixel.
- ``"toeplitz"``: one product of each row of ``g`` (``Q, f``) with a Toeplitz
  matrix of ``W`` finishes the columns at once, then the rows are added as
  above. More arithmetic (``W`` zeros included) in one well-shaped product.
- ``"shift"``: the gemm's patches, then the overlap-add as ``K_h K_w``
  shifted copies added up, the whole compiled as one XLA cluster, which
  fuses the additions into a single pass over the patches (no 0/1
  products, no transposes). Fastest in float32; XLA's CPU arithmetic in
  bfloat16 is slow, so there the two above are used.

The arithmetic is TensorFlow's sum in another order: equal to rounding
(tests/test_conv.py).
"""

import numpy as np
import tensorflow as tf

METHODS = ("gemm", "toeplitz", "shift")
"""The two formulations of :func:`input_gradient` (see the module docstring)."""


def same_padding(size: int, kernel: int, stride: int) -> int:
    """Top (or left) zero padding of TensorFlow's ``"SAME"`` along one axis."""
    out = -(-size // stride)
    return max((out - 1) * stride + kernel - size, 0) // 2


def _dilate(dy: tf.Tensor, stride: int) -> tf.Tensor:
    """``dy [B, h, w, F]`` with ``stride - 1`` zero rows and columns after each."""
    if stride == 1:
        return dy
    _, h, w, f = dy.shape
    spread = tf.pad(dy[:, :, None, :, None, :],
                    [[0, 0], [0, 0], [0, stride - 1], [0, 0], [0, stride - 1], [0, 0]])
    return tf.reshape(spread, [-1, h * stride, w * stride, f])


def overlap_matrix(positions: int, kernel: int, pad: int, size: int) -> np.ndarray:
    """0/1 ``[positions * kernel, size]``: row ``(P, u)`` adds into pixel ``P + u - pad``.

    The column-to-image step of the gradient (overlap-add) as a matrix
    product: one 1 per row, none where the pixel falls in the padding.
    """
    matrix = np.zeros((positions, kernel, size), np.float32)
    p, u = np.meshgrid(np.arange(positions), np.arange(kernel), indexing="ij")
    target = p + u - pad
    inside = (target >= 0) & (target < size)
    matrix[p[inside], u[inside], target[inside]] = 1.0
    return matrix.reshape(positions * kernel, size)


def _add_rows(z: tf.Tensor, pad: int, height: int) -> tf.Tensor:
    """``z [B, X, Hg, K_h]`` (X any trailing block) -> ``[B, X, H]`` by overlap-add over rows."""
    shape = z.shape
    rows = tf.constant(overlap_matrix(shape[-2], shape[-1], pad, height), z.dtype)
    flat = tf.reshape(z, [-1, shape[-2] * shape[-1]])
    return tf.reshape(tf.matmul(flat, rows), [-1, *shape[1:-2], height])


def _patches(g, kernel):
    """``g W^T``, one matrix product over ``F``: ``[B, Hg, Wg, K_h, K_w, C]``, each upstream
    pixel's patch of the input gradient."""
    k_h, k_w, channels, filters = kernel.shape
    _, h_g, w_g, _ = g.shape
    w2 = tf.reshape(tf.transpose(kernel, [3, 0, 1, 2]), [filters, -1])  # F, (u v c)
    return tf.reshape(tf.matmul(tf.reshape(g, [-1, filters]), w2),
                      [-1, h_g, w_g, k_h, k_w, channels])


def _gemm(g, kernel, size, pads):
    """Patches ``g W^T`` (one matrix product over ``F``), then overlap-add columns, rows."""
    k_h, k_w, channels, _ = kernel.shape
    _, h_g, w_g, _ = g.shape
    patches = tf.transpose(_patches(g, kernel), [0, 1, 3, 5, 2, 4])  # B, Hg, u, c, Wg, v
    cols = tf.constant(overlap_matrix(w_g, k_w, pads[1], size[1]), g.dtype)
    z = tf.matmul(tf.reshape(patches, [-1, w_g * k_w]), cols)
    z = tf.transpose(tf.reshape(z, [-1, h_g, k_h, channels, size[1]]), [0, 3, 4, 1, 2])
    dx = _add_rows(z, pads[0], size[0])  # B, c, j, i
    return tf.transpose(dx, [0, 3, 2, 1])


def _toeplitz(g, kernel, size, pads):
    """Each row of ``g`` times a Toeplitz matrix of ``W`` (columns done), then overlap-add rows."""
    k_h, k_w, channels, filters = kernel.shape
    _, h_g, w_g, _ = g.shape
    # A[(Q, f), (u, j, c)] = W[u, j - Q + p_l, c, f], zero off the kernel.
    v = np.arange(size[1])[None, :] - np.arange(w_g)[:, None] + pads[1]  # Q, j
    v = np.where((v >= 0) & (v < k_w), v, k_w)
    taps = tf.gather(tf.pad(kernel, [[0, 0], [0, 1], [0, 0], [0, 0]]), v, axis=1)  # u Q j c f
    toeplitz = tf.reshape(tf.transpose(taps, [1, 4, 0, 2, 3]), [w_g * filters, -1])
    z = tf.matmul(tf.reshape(g, [-1, w_g * filters]), toeplitz)  # (B Hg), (u j c)
    z = tf.transpose(tf.reshape(z, [-1, h_g, k_h, size[1], channels]), [0, 3, 4, 1, 2])
    dx = _add_rows(z, pads[0], size[0])  # B, j, c, i
    return tf.transpose(dx, [0, 3, 1, 2])


def _shift(g, kernel, size, pads):
    """The gemm's patches, then the overlap-add as shifted copies, in one XLA cluster."""
    return _shift_xla(g, kernel, tuple(size), tuple(pads))


def _shifted_overlap_add(g, kernel, size, pads):
    k_h, k_w = kernel.shape[:2]
    patches = _patches(g, kernel)
    rows = []
    for u in range(k_h):  # patch (P, Q, u, v) lands on pixel (P + u, Q + v) of the full map
        row = tf.add_n([tf.pad(patches[:, :, :, u, v, :], [[0, 0], [0, 0], [v, k_w - 1 - v],
                                                            [0, 0]]) for v in range(k_w)])
        rows.append(tf.pad(row, [[0, 0], [u, k_h - 1 - u], [0, 0], [0, 0]]))
    full = tf.add_n(rows)  # B, Hg + K_h - 1, Wg + K_w - 1, C: pixel (i, j) at (i + p_t, j + p_l)
    beyond = [max(p + n - m, 0) for p, n, m in zip(pads, size, full.shape[1:3])]
    full = tf.pad(full, [[0, 0], [0, beyond[0]], [0, beyond[1]], [0, 0]])
    return full[:, pads[0]:pads[0] + size[0], pads[1]:pads[1] + size[1], :]


_shift_xla = tf.function(_shifted_overlap_add, jit_compile=True, autograph=False)


def multiply_adds(method: str, dy_shape, kernel_shape, size, stride: int = 1) -> float:
    """Multiply-adds per image of one formulation (its matrix products)."""
    k_h, k_w, channels, filters = kernel_shape
    h_g, w_g = dy_shape[1] * stride, dy_shape[2] * stride
    rows = channels * size[1] * h_g * k_h * size[0]
    if method == "shift":  # the patches; the overlap-add is additions only
        return h_g * w_g * filters * k_h * k_w * channels
    if method == "gemm":
        return h_g * w_g * filters * k_h * k_w * channels + h_g * k_h * channels * w_g * k_w * size[1] + rows
    return h_g * w_g * filters * k_h * size[1] * channels + rows


def choose_method(dy_shape, kernel_shape, size, stride: int = 1, dtype="float32") -> str:
    """The faster formulation for this layer: ``"shift"``, ``"gemm"`` or ``"toeplitz"``.

    In float32 (and float64) the shift form: the gemm's product, then only
    additions, fused by XLA (bench 7 in results/bench.txt, first layer
    alone, float32: 1.23x the forward pass on the paper's 9x9 layer at
    28x28, gemm 1.79x; 1.04x at 42x42, gemm 1.42x; 0.52x on the seed
    model's 3x3 one, gemm 0.77x). In bfloat16, XLA's CPU arithmetic is
    4-7x slower, and the choice is between the other two:

    The Toeplitz form does more arithmetic (the kernel's zeros included) in
    one well-shaped matrix product; the gemm form does the least but writes
    ``K_h K_w`` values per upstream pixel. Measured on the paper's 9x9 layer
    (bench 7 in results/bench.txt, first layer alone): in float32 the gemm
    is faster (28x28: 19.5 vs 21.2 ms; 42x42: 52 vs 74 ms); in bfloat16,
    where oneDNN's matrix products are fast, the Toeplitz form is (28x28:
    7.5 vs 9.3 ms; 42x42: equal), as long as it does at most 3x the gemm's
    multiply-adds (2.1x at 28x28, 2.8x at 42x42; 3.3x for the seed model's
    3x3 layer, where the two are equal).
    """
    if str(getattr(dtype, "name", dtype)) in ("float32", "float64"):
        return "shift"
    ratio = (multiply_adds("toeplitz", dy_shape, kernel_shape, size, stride)
             / multiply_adds("gemm", dy_shape, kernel_shape, size, stride))
    return "toeplitz" if ratio <= 3.0 else "gemm"


def input_gradient(dy: tf.Tensor, kernel: tf.Tensor, input_size: tuple[int, int],
                   stride: int, pads: tuple[int, int], method: str = "auto") -> tf.Tensor:
    """The gradient of a convolution with respect to its input, from matrix products.

    Args:
      dy: upstream gradient ``[B, h, w, F]``, static ``h, w``.
      kernel: ``W [K_h, K_w, C, F]``, same dtype as ``dy``.
      input_size: ``(H, W)`` of the convolution's input.
      stride: the convolution's stride (both axes).
      pads: ``(p_t, p_l)``, its top and left zero padding.
      method: ``"gemm"``, ``"toeplitz"`` or ``"auto"`` (:func:`choose_method`,
        by the shapes and ``dy``'s dtype).

    Returns:
      ``dx [B, H, W, C]``, equal to ``tf.nn.conv2d``'s own input gradient up
      to the order of the sums.
    """
    if method == "auto":
        method = choose_method(dy.shape, kernel.shape, input_size, stride, dy.dtype)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS} or 'auto'")
    g = _dilate(dy, stride)
    formulation = {"gemm": _gemm, "toeplitz": _toeplitz, "shift": _shift}[method]
    return formulation(g, kernel, tuple(input_size), pads)


def conv2d(x: tf.Tensor, kernel: tf.Tensor, stride: int = 1, padding: str = "VALID",
           method: str = "auto") -> tf.Tensor:
    """``tf.nn.conv2d(x, kernel, stride, padding)`` with :func:`input_gradient`.

    Args:
      x: ``[B, H, W, C]``, static ``H, W``.
      kernel: ``[K_h, K_w, C, F]``, same dtype.
      stride: both axes.
      padding: ``"VALID"`` or ``"SAME"``.
      method: of :func:`input_gradient`.

    Returns:
      ``[B, h, w, F]``; its gradient with respect to ``kernel`` is
      TensorFlow's own, with respect to ``x`` :func:`input_gradient`'s.
    """
    padding = padding.upper()
    size = tuple(x.shape[1:3])
    if padding == "SAME":
        pads = tuple(same_padding(n, k, stride) for n, k in zip(size, kernel.shape[:2]))
    else:
        pads = (0, 0)

    @tf.custom_gradient
    def forward(x, kernel):
        def grad(dy):
            dx = input_gradient(dy, kernel, size, stride, pads, method)
            dw = tf.compat.v1.nn.conv2d_backprop_filter(
                x, tf.shape(kernel), dy, [1, stride, stride, 1], padding)
            return dx, dw
        return tf.nn.conv2d(x, kernel, stride, padding), grad

    return forward(x, kernel)
