"""Arrays built on first read: a dataclass field that holds a :class:`Deferred`.

A split's fixed warped images are a pure function of arrays it already
keeps (digits, warps, clutter); building them only when read spares a run
that never reads them their memory (:mod:`stn.data.pipeline`).
"""

import dataclasses
import threading
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Deferred:
    """An array made on first use: ``build()`` returns an array of ``shape``.

    Pass one as the value of a :class:`BuiltOnFirstUse` field (a
    :class:`stn.data.pipeline.Split`'s ``images``) to build it only if read.
    """
    build: Callable[[], np.ndarray]
    shape: tuple[int, ...]


class BuiltOnFirstUse:
    """A dataclass field holding an array or a :class:`Deferred` that makes it.

    Reading the field returns the array (read-only), building it the first
    time from a Deferred and keeping it; the field has no default.
    """

    def __set_name__(self, owner, name):
        self.slot = f"_{name}_value"

    def __get__(self, obj, owner=None):
        if obj is None:  # the class form: tells dataclasses there is no default
            raise AttributeError(self.slot)
        value = obj.__dict__[self.slot]
        if isinstance(value, Deferred):
            with _BUILD_LOCK:  # two threads reading at once: one builds, both get it
                value = obj.__dict__[self.slot]
                if isinstance(value, Deferred):
                    value = value.build()
                    value.flags.writeable = False
                    obj.__dict__[self.slot] = value
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value

    def is_built(self, obj) -> bool:
        return not isinstance(obj.__dict__[self.slot], Deferred)

    def shape(self, obj) -> tuple[int, ...]:
        """The array's shape, without building it."""
        return tuple(obj.__dict__[self.slot].shape)


_BUILD_LOCK = threading.RLock()
