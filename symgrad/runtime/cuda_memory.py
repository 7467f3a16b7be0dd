"""Parameters resident on the GPU: one device copy per parameter, kept coherent with the host.

A ``DeviceMirror`` hangs off a parameter's ``ParamSlot``. Two flags say which side is newer:
a training step on the GPU writes the device copy (``device_newer``); reading
``param.value`` copies it back first and, since the caller may then write the array in
place, marks the host as newer (``host_newer``), so the next launch uploads it again. Values
therefore never diverge silently, and a loop of steps moves no parameter across the bus.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class DeviceMirror:
    __slots__ = ("driver", "address", "nbytes", "device_newer", "host_newer")

    def __init__(self, driver: Any, nbytes: int):
        self.driver, self.nbytes = driver, nbytes
        self.address = driver.alloc(nbytes)
        self.device_newer, self.host_newer = False, True

    def to_host(self, host: np.ndarray) -> None:
        """Bring ``host`` up to date; afterwards the host copy is the one to trust."""
        if self.device_newer:
            self.driver.download(self.address, host)
            self.device_newer = False
        self.host_newer = True

    def sync_host(self, host: np.ndarray) -> None:
        """Bring ``host`` up to date without handing it out for writing: both copies stay
        current (a snapshot is read, not written in place)."""
        if self.device_newer:
            self.driver.download(self.address, host)
            self.device_newer = False

    def forget_device(self) -> None:
        """The host was assigned a new value: the device copy is stale."""
        self.device_newer, self.host_newer = False, True

    def to_device(self, host: np.ndarray) -> int:
        """The device address, uploading the host value first if it is newer."""
        if self.host_newer:
            self.driver.upload(self.address, host)
            self.host_newer = False
        return self.address

    def written_on_device(self) -> None:
        self.device_newer, self.host_newer = True, False

    def __del__(self):
        try:
            self.driver.free(self.address)
        except Exception:  # interpreter shutdown, or the context is already gone
            pass


def device_address(slot: Any, driver: Any) -> int:
    """The device address of parameter ``slot``'s value on ``driver``, current."""
    mirror = slot.mirror
    if mirror is None or mirror.driver is not driver:
        if mirror is not None:  # moving to another driver: take the newest value along
            mirror.to_host(slot._value)
        slot.mirror = mirror = DeviceMirror(driver, slot._value.nbytes)
    return mirror.to_device(slot._value)


def commit(slot: Any, driver: Any, source: int) -> None:
    """Make the ``nbytes`` at device address ``source`` the parameter's new value."""
    address = device_address(slot, driver)
    driver.copy(address, source, slot._value.nbytes)
    slot.mirror.written_on_device()
