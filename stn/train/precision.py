"""The classifier's dtype policy: ``--precision auto`` picks what this machine computes natively."""

import tensorflow as tf


def resolve_precision(choice: str) -> tuple[str, str]:
    """The dtype policy for ``--precision choice`` (``"auto"`` or a policy), and why."""
    if choice != "auto":
        return choice, f"--precision {choice}"
    policy, reason = precision_choice()
    return policy, f"auto: {reason}"


def auto_precision(cpuinfo: str = "/proc/cpuinfo", gpu_capabilities=None) -> str:
    """The classifier's dtype policy for this machine: :func:`precision_choice` without the why."""
    return precision_choice(cpuinfo, gpu_capabilities)[0]


def precision_choice(cpuinfo: str = "/proc/cpuinfo",
                     gpu_capabilities: list[tuple[int, int] | None] | None = None
                     ) -> tuple[str, str]:
    """The classifier's dtype policy where its arithmetic is native, and why.

    With GPUs, the oldest decides (MirroredStrategy trains on all of them):
    compute capability 8.0 or newer (Ampere on) computes in bfloat16 ->
    ``"mixed_bfloat16"``; 7.x (Volta, Turing) has float16 tensor cores but
    no bfloat16 -> ``"mixed_float16"``, the standard speed-up there; older
    -> ``"float32"``. Without a GPU, a CPU with AVX512-BF16 or AMX-BF16
    (oneDNN then runs bfloat16 matmuls and convolutions at about twice the
    float32 rate; bench/) -> ``"mixed_bfloat16"``, else ``"float32"``.

    Args:
      cpuinfo: where the CPU flags are read (Linux); elsewhere float32.
      gpu_capabilities: ``(major, minor)`` compute capability of each GPU
        (None where unknown); None asks TensorFlow. Tests pass it.

    Returns:
      ``(policy, reason)``, e.g. ``("mixed_bfloat16", "CPU has AVX512-BF16")``.
    """
    if gpu_capabilities is None:
        gpu_capabilities = [_compute_capability(gpu)
                            for gpu in tf.config.list_physical_devices("GPU")]
    if gpu_capabilities:
        return _gpu_precision(gpu_capabilities)
    return _cpu_precision(cpuinfo)


def _compute_capability(gpu) -> tuple[int, int] | None:
    """``(major, minor)`` of a physical GPU device, None if TensorFlow does not say."""
    return tf.config.experimental.get_device_details(gpu).get("compute_capability")


def _gpu_precision(capabilities: list[tuple[int, int] | None]) -> tuple[str, str]:
    """``(policy, reason)`` for GPUs of these compute capabilities (see precision_choice)."""
    which = f"oldest of {len(capabilities)} GPUs: " if len(capabilities) > 1 else ""
    if any(c is None for c in capabilities):
        return "float32", f"{which}the GPU's compute capability is unknown"
    major, minor = min(tuple(c) for c in capabilities)
    cc = f"{which}GPU compute capability {major}.{minor}"
    if (major, minor) >= (8, 0):
        return "mixed_bfloat16", f"{cc} computes in bfloat16 natively"
    if (major, minor) >= (7, 0):
        return "mixed_float16", f"{cc} has float16 tensor cores but no bfloat16 (8.0 has)"
    return "float32", f"{cc} has no tensor cores (7.0 has)"


def _cpu_precision(cpuinfo: str) -> tuple[str, str]:
    """``(policy, reason)`` from the CPU flags in ``cpuinfo`` (see precision_choice)."""
    try:
        with open(cpuinfo) as f:
            flags = set(f.read().split())
    except OSError:  # not Linux: no cheap way to tell, stay safe
        return "float32", f"cannot read {cpuinfo} to look for bfloat16 instructions"
    for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")):
        if flag in flags:
            return "mixed_bfloat16", f"CPU has {name}"
    return "float32", "CPU has neither AVX512-BF16 nor AMX-BF16 (no native bfloat16)"
