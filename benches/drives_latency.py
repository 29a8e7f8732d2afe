#!/usr/bin/env python3
"""Measures udev event -> readable directory for the drives source (benches/drives.sh runs it).

Per trial: copy an image, `losetup --find --show --read-only` it (outside isomgr), poll every
POLL_US microseconds (20; 0 = spin without sleeping) until a file inside ROOT/NAME reads, and take the kernel-monotonic time udevadm stamped on the udev
event for the same loop device (`udevadm monitor --udev`: udev's own event, after its rules and
blkid). Then empty the tray (truncate + `losetup -c`), wait for the directory to go, detach.
Prints one JSON object: per-trial seconds (losetup->udev, udev->readable, losetup->readable).
"""
import ctypes
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time

image, root, name, inner, trials, work = sys.argv[1:7]
trials = int(trials)
target = os.path.join(root, name, inner)
LINE = re.compile(r"^UDEV\s+\[(\d+\.\d+)\]\s+(\w+)\s+(\S+)")

mon = subprocess.Popen(
    ["stdbuf", "-oL", "udevadm", "monitor", "--udev", "--subsystem-match=block"],
    stdout=subprocess.PIPE, text=True, bufsize=1)
events = queue.Queue()


def reader():
    for line in mon.stdout:
        m = LINE.match(line)
        if m:
            events.put((float(m.group(1)), m.group(2), m.group(3)))


threading.Thread(target=reader, daemon=True).start()
time.sleep(0.5)  # udevadm monitor subscribes before the first trial; not a measurement wait


# A client polling, not spinning: on a small machine a spinner holds a whole CPU, and udevd,
# the loop device's worker and isomgr then share what is left (what it would measure is the
# scheduler). The sleeps are made exact (timer slack 1 ns instead of 50 us), so a poll costs
# at most POLL_US of resolution, which counts against isomgr.
POLL = int(os.environ.get("POLL_US", "20")) / 1e6
try:
    ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
except (OSError, AttributeError):
    pass


def spin_until(pred, limit=20.0):
    end = time.monotonic() + limit
    while not pred():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {target}")
        if POLL:
            time.sleep(POLL)


def readable():
    try:
        fd = os.open(target, os.O_RDONLY)
    except OSError:
        return False
    try:
        return len(os.read(fd, 1)) == 1
    except OSError:
        return False
    finally:
        os.close(fd)


out = {"losetup_to_udev": [], "udev_to_ready": [], "losetup_to_ready": []}
backing = os.path.join(work, "trial.iso")
try:
    for i in range(trials):
        shutil.copyfile(image, backing)
        subprocess.run(["udevadm", "settle"], check=True)
        t0 = time.monotonic()
        dev = subprocess.run(["losetup", "--find", "--show", "--read-only", backing],
                             check=True, capture_output=True, text=True).stdout.strip()
        sysname = os.path.basename(dev)
        # Poll the file from the start (normal priority; at nice 19 the poller itself lags by a
        # scheduler slice on a busy machine, which is what it would then measure).
        spin_until(readable)
        t_ready = time.monotonic()
        # udev's event for this attach, stamped by udevadm on arrival (same clock).
        t_udev = None
        deadline = time.monotonic() + 20
        while t_udev is None:
            ts, action, devpath = events.get(timeout=max(0.1, deadline - time.monotonic()))
            if ts >= t0 and devpath.endswith("/" + sysname) and action in ("add", "change"):
                t_udev = ts
        out["losetup_to_udev"].append(t_udev - t0)
        out["udev_to_ready"].append(t_ready - t_udev)
        out["losetup_to_ready"].append(t_ready - t0)
        # Empty the tray: isomgr lets go of the device, then it can be detached for real.
        os.truncate(backing, 0)
        subprocess.run(["losetup", "-c", dev], check=True)
        spin_until(lambda: not os.path.exists(os.path.join(root, name)))
        subprocess.run(["losetup", "-d", dev], check=True)
finally:
    # Also on a timeout: the monitor must not outlive the run (it holds the caller's pipe).
    mon.terminate()
    mon.wait()
print(json.dumps(out))
