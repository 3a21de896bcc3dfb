#!/usr/bin/env python3
"""Packs a directory into a gzip'd newc cpio archive (an initramfs), owned by root.

usage: mkinitramfs.py DIR OUT.gz   (so the QEMU test needs no cpio binary)
"""
import gzip
import os
import stat
import sys


def header(ino, mode, size, namesize, nlink=1):
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def pad(n):
    return b"\0" * ((4 - n % 4) % 4)


def main():
    src, out = sys.argv[1], sys.argv[2]
    data = bytearray()
    ino = 1
    for top, dirs, files in os.walk(src):
        dirs.sort()
        for name in [""] + sorted(dirs) + sorted(files):
            path = os.path.join(top, name) if name else top
            rel = os.path.relpath(path, src)
            if rel == "." and name == "" and top != src:
                continue
            if name in dirs:
                continue  # each directory is emitted when os.walk enters it
            st = os.lstat(path)
            body = b""
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    body = f.read()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path).encode()
            fname = (rel if rel != "." else ".").encode() + b"\0"
            hdr = header(ino, st.st_mode, len(body), len(fname))
            data += hdr + fname + pad(len(hdr) + len(fname)) + body + pad(len(body))
            ino += 1
    trailer = b"TRAILER!!!\0"
    hdr = header(0, 0, 0, len(trailer), nlink=1)
    data += hdr + trailer + pad(len(hdr) + len(trailer))
    with gzip.open(out, "wb", compresslevel=1) as f:
        f.write(bytes(data))


if __name__ == "__main__":
    main()
