#!/usr/bin/env python3
"""What one pwrite + fdatasync costs on this disk, by how the file was laid out.

    scripts/fsync-cost.py [DIR] [WRITE_BYTES]

Writes WRITE_BYTES (default 30,000: about one group commit of the e2e
benchmark at 870k records/s) 3,000 times at consecutive offsets, each
followed by fdatasync, to a fresh file in DIR (default /tmp), once for each
layout, and prints per call: wall time, kernel CPU time of this process
(not the kernel's writeback threads) and the pwrite's own time.

Layouts:
  append  the file grows with each write (how a segment is written now)
  sparse  ftruncate to the final size first (a hole: blocks still allocated
          at writeback)
  falloc  posix_fallocate first (blocks reserved as unwritten extents)
  zero    the whole file written with zeros and synced first (blocks
          allocated and written: what recycling old segment files would give)
"""
import os
import resource
import sys
import time

CALLS = 3000


def run(layout, directory, size):
    path = os.path.join(directory, "fsync-cost.dat")
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    try:
        total = CALLS * size
        if layout == "zero":
            chunk = b"\0" * (1 << 20)
            for _ in range(total // len(chunk) + 1):
                os.write(fd, chunk)
            os.fsync(fd)
        elif layout == "sparse":
            os.ftruncate(fd, total)
            os.fsync(fd)
        elif layout == "falloc":
            os.posix_fallocate(fd, 0, total)
            os.fsync(fd)
        data = b"x" * size
        before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        start = time.perf_counter()
        pwrite_s = 0.0
        for i in range(CALLS):
            t = time.perf_counter()
            os.pwrite(fd, data, i * size)
            pwrite_s += time.perf_counter() - t
            os.fdatasync(fd)
        wall_s = time.perf_counter() - start
        sys_s = resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
    finally:
        os.close(fd)
        os.unlink(path)
    us = lambda s: s / CALLS * 1e6
    print(f"{layout:7} {size:>8} B  wall {us(wall_s):6.0f} us  "
          f"kernel CPU {us(sys_s):5.0f} us  pwrite {us(pwrite_s):5.1f} us")


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    arg = sys.argv[2] if len(sys.argv) > 2 else "30000"
    size = int(arg) if arg.isdigit() else 0
    if size <= 0:
        sys.exit("error: WRITE_BYTES must be a positive number of bytes")
    if not os.path.isdir(directory):
        sys.exit(f"error: {directory} is not a directory; pass an existing "
                 "directory on the disk to measure")
    # Twice, interleaved: this disk's fsync latency drifts within seconds.
    for _ in range(2):
        for layout in ("append", "sparse", "falloc", "zero"):
            run(layout, directory, size)


if __name__ == "__main__":
    main()
