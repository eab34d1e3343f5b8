"""A guest that writes a lot to its serial console, then idles: for console log size caps.

The tiny guest's kernel with an initramfs of busybox and a short ``/init`` that prints
``WV-CHATTY-START``, ``wv.lines`` numbered lines of about 500 bytes, ``WV-CHATTY-DONE``,
and then sleeps. The output is bounded by ``wv.lines``.
"""

from __future__ import annotations

from pathlib import Path

from wattvisor.images.cpio import CpioEntry, gzip_deterministic, newc_archive

LINE_BYTES = 500
CHATTY_INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
n=$(/bin/busybox sed -n 's/.*wv\.lines=\([0-9]*\).*/\1/p' /proc/cmdline)
pad=$(/bin/busybox printf '%480s' '' | /bin/busybox tr ' ' '.')
echo "WV-CHATTY-START lines=$n"
i=0
while [ "$i" -lt "$n" ]; do
    i=$((i + 1))
    echo "WV-CHATTY n=$i $pad"
done
echo "WV-CHATTY-DONE lines=$n"
while :; do /bin/busybox sleep 3600; done
"""


def write_chatty_initrd(directory: Path, busybox: Path = Path("/bin/busybox")) -> Path:
    """The initramfs in ``directory`` (which QEMU must be able to reach), readable by all."""
    entries = [
        CpioEntry.directory("bin"),
        CpioEntry.directory("dev"),
        CpioEntry.file("init", CHATTY_INIT.encode(), 0o755),
        CpioEntry.file("bin/busybox", busybox.read_bytes(), 0o755),
        CpioEntry.char_device("dev/console", 5, 1),
    ]
    initrd = directory / "chatty-initrd.gz"
    initrd.write_bytes(gzip_deterministic(newc_archive(entries)))
    initrd.chmod(0o644)
    return initrd


def chatty_cmdline(lines: int) -> str:
    return f"console=ttyS0 panic=-1 loglevel=4 wv.lines={lines}"
