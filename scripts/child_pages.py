#!/usr/bin/env python3
"""Which pages of a forked process are its own, mapping by mapping.

A fork-per-connection child shares every page with its parent until one of
the two writes to it; what a child really costs is the pages it has
written. smaps_rollup gives their sum (USS); this script shows where they
are: for each mapping of PID, the pages mapped by this process alone
(/proc/kpagecount == 1), by page number within the mapping.

    sudo scripts/child_pages.py PID          # e.g. the pid of one mpchat-client

Needs root (/proc/PID/pagemap hides page frame numbers from others, and
/proc/kpagecount is root's). Linux only.
"""

import struct
import sys

PAGE = 4096


def mappings(pid):
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else "[anon]"
            yield start, end, name


def own_pages(pid, start, end, pagemap, kpagecount):
    """Page numbers (within the mapping) mapped by this process only."""
    own = []
    pagemap.seek(start // PAGE * 8)
    entries = pagemap.read((end - start) // PAGE * 8)
    for i in range(len(entries) // 8):
        (entry,) = struct.unpack_from("Q", entries, i * 8)
        if not entry >> 63:  # not present
            continue
        pfn = entry & ((1 << 55) - 1)
        kpagecount.seek(pfn * 8)
        (count,) = struct.unpack("Q", kpagecount.read(8))
        if count == 1:
            own.append(i)
    return own


def main():
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: child_pages.py PID")
    pid = int(sys.argv[1])
    total = 0
    try:
        with open(f"/proc/{pid}/pagemap", "rb") as pagemap, open("/proc/kpagecount", "rb") as kpc:
            for start, end, name in mappings(pid):
                # vsyscall lies above the user address space; vvar has no page frames.
                if start >= 1 << 47 or name.startswith("[vvar"):
                    continue
                own = own_pages(pid, start, end, pagemap, kpc)
                if own:
                    total += len(own)
                    pages = " ".join(f"+{i}" for i in own)
                    print(f"{len(own):3} pages  {name}  ({pages})")
    except PermissionError:
        sys.exit("child_pages.py: needs root to read page frame numbers")
    except FileNotFoundError:
        sys.exit(f"child_pages.py: no process {pid}")
    print(f"{total:3} pages = {total * PAGE // 1024} KiB of its own")


if __name__ == "__main__":
    main()
